/**
 * TEST FIXTURE (bundled by runtime.test.ts): creates a runtime dir, starts a stand-in "VMM" (`sleep`) through the
 * driver's spawn path, prints {dir, pid}, then ends the way argv[2] says: "sigterm"/"sigint" (waits to be
 * signalled), "throw" (uncaught exception), "exit" (normal exit), "hang" (waits for SIGKILL).
 */
import { spawnVmm } from "../process";
import { createRuntimeDir, registerVmmPid } from "../runtime";

const [mode, root] = process.argv.slice(2);
const dir = createRuntimeDir(root as string, `child-${process.pid}`);
const vmm = spawnVmm("sleep", ["600"], dir);
registerVmmPid(dir, vmm.pid);
process.stdout.write(`${JSON.stringify({ dir, pid: vmm.pid })}\n`);
if (mode === "throw")
  setTimeout(() => {
    throw new Error("boom (expected by the test)");
  }, 100);
else if (mode === "exit") setTimeout(() => process.exit(0), 100);
else setInterval(() => {}, 1 << 30);

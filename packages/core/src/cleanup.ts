/**
 * Process-exit cleanup: no VM process may outlive the host process. Every live VM registers a
 * synchronous kill function; on `exit` (normal exit, process.exit, uncaught exception) and on
 * SIGINT/SIGTERM/SIGHUP every registered VM is SIGKILLed and its runtime dir removed. (A SIGKILL of Node
 * itself cannot run handlers: the backends start QEMU with a parent-death signal for that case.)
 */

type Killer = () => void;

const live = new Map<number, Killer>();
let nextId = 1;
let installed = false;

function killAll(): void {
  for (const [id, kill] of live) {
    live.delete(id);
    try {
      kill();
    } catch {
      /* best effort at exit */
    }
  }
}

/**
 * Marks the signal listeners of supermachine packages (this one, the hypervisor driver, other copies):
 * they clean up and then keep the default behaviour, so they must not count as the application's own
 * handler for each other. A global symbol, so copies of different versions agree.
 */
const CLEANUP_LISTENER = Symbol.for("supermachine.exit-cleanup-listener");

/** True when no listener of `signal` is the application's own (only supermachine cleanups listen). */
export function onlyCleanupListeners(signal: NodeJS.Signals): boolean {
  return process
    .listeners(signal)
    .every((l) => (l as unknown as Record<symbol, unknown>)[CLEANUP_LISTENER] === true);
}

function onSignal(signal: NodeJS.Signals): void {
  killAll();
  // Keep the default behaviour (terminate with the signal) unless the application handles it too.
  if (onlyCleanupListeners(signal)) {
    uninstall();
    process.kill(process.pid, signal);
  }
}
(onSignal as unknown as Record<symbol, unknown>)[CLEANUP_LISTENER] = true;

const SIGNALS: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

function install(): void {
  if (installed) return;
  installed = true;
  process.on("exit", killAll);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  process.off("exit", killAll);
  for (const s of SIGNALS) process.off(s, onSignal);
}

/** Register a synchronous killer; returns the unregister function. */
export function registerForCleanup(kill: Killer): () => void {
  install();
  const id = nextId++;
  live.set(id, kill);
  return () => {
    live.delete(id);
    if (live.size === 0) uninstall();
  };
}

/** For tests: how many VMs are registered. */
export function liveCount(): number {
  return live.size;
}

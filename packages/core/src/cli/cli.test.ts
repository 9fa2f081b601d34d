/**
 * The `supermachine` CLI without VMs: help for every command, --version, usage errors (exit 2 naming
 * the problem), image rootfs input checks before any pull, doctor's hints outside the repository, and
 * the console follower used by `run IMAGE`.
 */
import { appendFileSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it, vi } from "vitest";
import { COMMANDS, main } from "../cli";
import { parseArgs, UsageError } from "./args";
import { crlfFilter, followConsole } from "./console";
import { doctorReport, fixHint } from "./doctor";
import { parsePublish } from "./run";
import { corePackageJson, repoCheckout } from "./where";

const REPO = resolve(fileURLToPath(new URL("../../../..", import.meta.url)));
const tmp = await mkdtemp(join(tmpdir(), "sm-cli-unit-"));
afterAll(() => rm(tmp, { recursive: true, force: true }));

/** Run main(argv) with stdout/stderr captured. */
async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const out = vi.spyOn(process.stdout, "write").mockImplementation((c: string | Uint8Array) => {
    stdout += String(c);
    return true;
  });
  const err = vi.spyOn(process.stderr, "write").mockImplementation((c: string | Uint8Array) => {
    stderr += String(c);
    return true;
  });
  try {
    const code = await main(argv);
    return { code, stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

const commandLines = [
  ...Object.entries(COMMANDS)
    .filter(([, c]) => !c.hidden)
    .map(([name]) => name),
  "image rootfs",
];

describe("help and version", () => {
  it("--version prints core's package version", async () => {
    const pkg = JSON.parse(readFileSync(join(REPO, "packages/core/package.json"), "utf8"));
    for (const v of ["--version", "-v"]) {
      expect(await cli(v)).toEqual({ code: 0, stdout: `${pkg.version}\n`, stderr: "" });
    }
  });

  it("finds the version from an installed package's dist/ (nearest package.json named @supermachine/core)", () => {
    const pkg = join(tmp, "node_modules", "@supermachine", "core");
    mkdirSync(join(pkg, "dist"), { recursive: true });
    writeFileSync(join(tmp, "package.json"), JSON.stringify({ name: "consumer", version: "1.0.0" }));
    writeFileSync(
      join(pkg, "package.json"),
      JSON.stringify({ name: "@supermachine/core", version: "7.8.9" }),
    );
    expect(corePackageJson(join(pkg, "dist")).version).toBe("7.8.9");
  });

  it("top-level help lists every command (and setup) and exits 0; no arguments is a usage error (2)", async () => {
    const r = await cli("--help");
    expect(r.code).toBe(0);
    for (const c of ["run", "build", "images", "rm", "pull", "image", "doctor", "setup"]) {
      expect(r.stdout).toMatch(new RegExp(`^  ${c} +\\S`, "m"));
    }
    const none = await cli();
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("Usage: supermachine <command>");
  });

  it.each(commandLines)("%s --help prints usage, options and an example, exit 0", async (cmd) => {
    for (const h of ["--help", "-h"]) {
      const r = await cli(...cmd.split(" "), h);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe("");
      expect(r.stdout).toMatch(new RegExp(`^Usage: supermachine ${cmd}\\b`));
      expect(r.stdout).toContain("\nOptions:\n");
      expect(r.stdout).toMatch(/\nExamples:\n {2}supermachine \S+/);
    }
    expect((await cli("help", ...cmd.split(" "))).stdout).toMatch(
      new RegExp(`^Usage: supermachine ${cmd}\\b`),
    );
  });

  it("--help after the guest command belongs to the guest command", () => {
    const p = parseArgs("run", ["img", "ls", "--help"], [], 1);
    expect(p).toMatchObject({ positionals: ["img"], rest: ["ls", "--help"] });
  });
});

describe("usage errors exit 2 and name the problem", () => {
  it.each([
    [["frobnicate"], /unknown command frobnicate/],
    [["--frob"], /unknown option --frob/],
    [["help", "frob"], /no help for unknown command frob/],
    [["run", "--bogus", "img"], /unknown option --bogus for run/],
    [["run"], /run needs an IMAGE/],
    [["run", "--memory", "lots", "img"], /--memory expects an integer ≥ 1, got "lots"/],
    [["run", "--pull", "sometimes", "img"], /--pull expects one of always, missing, never/],
    [["run", "-p", "99999:80", "img"], /--publish expects \[HOST:\]GUEST/],
    [["build"], /build needs an IMAGE/],
    [["build", "a", "b"], /build takes one IMAGE, got also: b/],
    [["build", "a", "--memory", "0"], /--memory expects an integer ≥ 1, got "0"/],
    [["build", "--memory"], /--memory needs a value/],
    [["images", "extra"], /images takes no arguments/],
    [["rm"], /rm needs at least one NAME/],
    [["pull"], /pull needs an IMAGE/],
    [["doctor", "--fix"], /unknown option --fix for doctor/],
    [["doctor", "now"], /doctor takes no arguments, got: now/],
    [["image"], /image needs a subcommand/],
    [["image", "squash"], /unknown image subcommand squash/],
    [["image", "rootfs", "busybox"], /needs -o FILE/],
    [["image", "rootfs", "-o", "x.sqfs"], /needs an IMAGE/],
    [["image", "rootfs", "a", "b", "-o", "x"], /takes one IMAGE/],
    [["image", "rootfs", "a", "-o", "x", "--block-size", "5000"], /power of two/],
    [["image", "rootfs", "a", "-o", "x", "--level", "9"], /unknown option --level for image rootfs/],
  ])("%j", async (argv, re) => {
    const r = await cli(...argv);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^supermachine: SM_USAGE: /);
    expect(r.stderr).toMatch(re);
    expect(r.stderr).toMatch(/\nUsage: supermachine /);
    expect(r.stdout).toBe("");
  });

  it("combined short flags: -it is -i -t; -q works with -i", () => {
    const specs = [
      { names: ["--interactive", "-i"], help: "" },
      { names: ["--tty", "-t"], help: "" },
      { names: ["--env", "-e"], value: "K=V", help: "" },
    ];
    const p = parseArgs("run", ["-it", "-e", "A=1", "--env=B=2", "img", "sh"], specs, 1);
    expect([...p.flags.entries()]).toEqual([
      ["--interactive", ["1"]],
      ["--tty", ["1"]],
      ["--env", ["A=1", "B=2"]],
    ]);
    expect(p.rest).toEqual(["sh"]);
    expect(() => parseArgs("run", ["-ie", "img"], specs, 1)).toThrow(UsageError);
  });

  it("--publish: [127.0.0.1:][HOST:]GUEST", () => {
    expect(parsePublish("8080:80")).toEqual({ hostPort: 8080, guestPort: 80 });
    expect(parsePublish("80")).toEqual({ hostPort: 0, guestPort: 80 });
    expect(parsePublish("127.0.0.1:0:8080")).toEqual({ hostPort: 0, guestPort: 8080 });
    for (const bad of ["0.0.0.0:80:80", "x:80", "80:0", "1:2:3:4", ""]) {
      expect(() => parsePublish(bad)).toThrow(UsageError);
    }
  });
});

describe("image rootfs checks the output path before pulling", () => {
  // 127.0.0.1:1 has no registry: reaching the pull would fail with a different (network) error.
  const ref = "127.0.0.1:1/nothing:latest";
  it("an output directory that does not exist", async () => {
    const r = await cli("image", "rootfs", ref, "-o", join(tmp, "no", "such", "dir", "x.sqfs"));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^supermachine: SM_ROOTFS_IO: cannot write .* does not exist/);
  });
  it("an output path that is a directory", async () => {
    const r = await cli("image", "rootfs", ref, "-o", tmp);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/SM_ROOTFS_IO: -o .* is a directory: give a file name/);
  });
  it("a directory that takes no new file (read-only /sys, even for root)", async () => {
    const r = await cli("image", "rootfs", "-q", ref, "-o", "/sys/rootfs.sqfs");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /SM_ROOTFS_IO: cannot write \/sys\/rootfs.sqfs: creating a file in \/sys failed/,
    );
  });
});

describe("doctor", () => {
  it("knows whether it runs from the monorepo checkout", () => {
    expect(repoCheckout(join(REPO, "packages/core/src/cli"))).toBe(REPO);
    expect(repoCheckout(join(REPO, "packages/core/dist"))).toBe(REPO);
    expect(repoCheckout(join(tmp, "node_modules/@supermachine/core/dist"))).toBeUndefined();
  });

  it("outside the repo: every fix is `npx supermachine setup`, never make / npm run setup", async () => {
    for (const what of ["qemu", "kernel", "agent"] as const) {
      const hint = fixHint(what, "x86_64", false);
      expect(hint).toContain("npx supermachine setup");
      expect(hint).not.toMatch(/make -C|npm run setup/);
      expect(fixHint(what, "x86_64", true)).toMatch(/make -C guest-agent|npm run setup/);
    }

    // A host with no QEMU on PATH and no kernel: the report names the npm user's fix only.
    const saved = { PATH: process.env.PATH, K: process.env.SUPERMACHINE_KERNEL_DIR };
    process.env.PATH = join(tmp, "empty-bin");
    process.env.SUPERMACHINE_KERNEL_DIR = join(tmp, "no-kernel");
    let r: Awaited<ReturnType<typeof cli>>;
    try {
      let stdout = "";
      const spy = vi.spyOn(process.stdout, "write").mockImplementation((c: string | Uint8Array) => {
        stdout += String(c);
        return true;
      });
      let code: number;
      try {
        code = await doctorReport(false);
      } finally {
        spy.mockRestore();
      }
      r = { code, stdout, stderr: "" };
    } finally {
      process.env.PATH = saved.PATH;
      if (saved.K === undefined) delete process.env.SUPERMACHINE_KERNEL_DIR;
      else process.env.SUPERMACHINE_KERNEL_DIR = saved.K;
    }
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /^FAIL {2}qemu +qemu-system-\S+ not on PATH\. Fix: run `npx supermachine setup`/m,
    );
    expect(r.stdout).toMatch(/^FAIL {2}kernel +.*\. Fix: run `npx supermachine setup`/m);
    expect(r.stdout).not.toMatch(/make -C|npm run setup/);
    expect(r.stdout).toMatch(/\nTo fix: npx supermachine setup\n$/);
  });
});

describe("console follower (run IMAGE's workload output)", () => {
  it("CR LF becomes LF, also across chunk boundaries", () => {
    const f = crlfFilter();
    const parts = ["a\r", "\nb\r\n", "c\r", "d", "\r"].map((s) => f(Buffer.from(s)).toString());
    expect(parts.join("") + f(Buffer.alloc(0), true).toString()).toBe("a\nb\nc\rd\r");
  });

  it("streams appended bytes from an offset, restarts after a trim, reads the rest on stop", async () => {
    const file = join(tmp, "console.log");
    writeFileSync(file, "boot log\r\n");
    let got = "";
    const f = followConsole(
      file,
      (b) => {
        got += b.toString();
      },
      { intervalMs: 10, startAt: 10 },
    );
    appendFileSync(file, "hello\r\n");
    await vi.waitFor(() => expect(got).toBe("hello\n"));
    truncateSync(file, 0); // the hypervisor's trim: emptied, QEMU appends at the new end
    appendFileSync(file, "after trim\r\n");
    await vi.waitFor(() => expect(got).toBe("hello\nafter trim\n"));
    appendFileSync(file, "last words\r\n");
    await f.stop();
    expect(got).toBe("hello\nafter trim\nlast words\n");
  });
});

describe("rm", () => {
  it("deletes a supermachine snapshot but never a directory another tool wrote", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sm-rm-"));
    try {
      mkdirSync(join(dir, "ours"));
      writeFileSync(join(dir, "ours", "metadata.json"), JSON.stringify({ format: "supermachine-snapshot" }));
      mkdirSync(join(dir, "theirs"));
      writeFileSync(join(dir, "theirs", "metadata.json"), JSON.stringify({ version: 3, vm: "original" }));
      const r = await cli("rm", "--snapshots-dir", dir, "ours", "theirs");
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("ours\n");
      expect(r.stderr).toContain("SM_SNAPSHOT_FOREIGN");
      expect(readFileSync(join(dir, "theirs", "metadata.json"), "utf8")).toContain("original");
      expect(() => readFileSync(join(dir, "ours", "metadata.json"))).toThrow();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

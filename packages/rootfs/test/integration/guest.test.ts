// The guest's own kernel (Debian cloud kernel under QEMU TCG) loads the modules our initramfs carries, in the
// order it lists, mounts our squashfs from virtio-blk and lists it; the listing must match sqfs2tar's view.
// /init here is a busybox shell script instead of the agent, so this needs nothing from the other packages.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { appendFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixtures, kernelBundle, quietSetup } from "../../../../scripts/lib/fixtures.mjs";
import { CPIO_DIR, CPIO_FILE, encodeCpio } from "../../src/cpio";
import { buildInitramfs, buildRootfs, tarFileLayer } from "../../src/index";
import { listImage } from "../../src/test-util";

const BUSYBOX = "/bin/busybox";
let bundle: string | undefined;
let probe: string | null = null;
try {
  bundle = kernelBundle("x86_64");
  if (!existsSync(join(bundle, "vmlinux")))
    probe = "kernel bundle has no vmlinux yet (derived by @supermachine/hypervisor on first use)";
} catch (err) {
  probe = `no x86_64 kernel bundle: ${(err as Error).message}`;
}
if (!probe && !existsSync(BUSYBOX)) probe = "no busybox-static at /bin/busybox";

const INIT = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in $($B cat /sm/modules.order); do $B insmod /sm/modules/$m || echo "INSMOD-FAIL $m"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do $B sleep 0.1; i=$((i+1)); done
$B mount -t squashfs -o ro /dev/vda /newroot || echo MOUNT-FAIL
cd /newroot
echo BEGIN-LIST
$B find . -exec $B stat -c 'E|%a|%u|%g|%s|%F|%n' {} +
$B find . -type f -exec $B sha256sum {} +
echo END-LIST
$B poweroff -f
`;

let work: string;
let qemu: ChildProcess | undefined;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sm-rootfs-guest-"));
}, 60_000);
afterAll(async () => {
  if (qemu && qemu.exitCode === null) qemu.kill("SIGKILL");
  if (work) await rm(work, { recursive: true, force: true });
});

describe.skipIf(probe !== null)(
  `guest kernel mounts our squashfs${probe ? ` (skipped: ${probe})` : ""}`,
  () => {
    it("loads the initramfs modules in order, mounts /dev/vda and sees the same tree as sqfs2tar", async () => {
      quietSetup();
      const fx = await fixtures();
      const layout = fx.images.layers.layout;
      const blob = (d: string) => join(layout, "blobs", ...d.split(":"));
      const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8"));
      const manifest = JSON.parse(await readFile(blob(index.manifests[0].digest), "utf8"));
      const image = join(work, "rootfs.sqfs");
      await buildRootfs({
        layers: manifest.layers.map((l: { digest: string }) => tarFileLayer(blob(l.digest), l.digest)),
        out: image,
      });

      const initScript = join(work, "init.sh");
      await writeFile(initScript, INIT, { mode: 0o755 });
      const initrd = join(work, "initrd.cpio");
      const r = await buildInitramfs({
        init: initScript,
        modulesDir: join(bundle as string, "modules"),
        modules: ["virtio_mmio", "virtio_blk", "squashfs"],
        config: new Uint8Array([0xa0]),
        out: initrd,
        gzip: false,
      });
      expect(r.modules.slice(-3)).toEqual(["virtio_mmio", "virtio_blk", "squashfs"]);
      // A second archive appended to the first (the kernel unpacks concatenated cpio archives): busybox itself.
      await appendFile(
        initrd,
        encodeCpio([
          { name: "bin", mode: CPIO_DIR | 0o755 },
          { name: "bin/busybox", mode: CPIO_FILE | 0o755, data: await readFile(BUSYBOX) },
        ]),
      );

      const mhz = /cpu MHz\s*:\s*([\d.]+)/.exec(await readFile("/proc/cpuinfo", "utf8"))?.[1];
      const khz = mhz ? Math.round(Number(mhz) * 1000) : 2_000_000;
      const consoleLog = join(work, "console.log");
      qemu = spawn(
        "setpriv",
        [
          "--pdeathsig",
          "KILL",
          "--",
          "qemu-system-x86_64",
          ...["-M", "microvm,rtc=off", "-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "1"],
          ...["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"],
          ...["-kernel", join(bundle as string, "vmlinux"), "-initrd", initrd],
          // TCG has no calibrated clock source on microvm: give the guest the host TSC rate (as the hypervisor does).
          ...[
            "-append",
            `console=ttyS0 quiet reboot=t panic=-1 rdinit=/init tsc_early_khz=${khz} lpj=${khz * 4}`,
          ],
          ...[
            "-drive",
            `id=root,file=${image},format=raw,if=none,read-only=on`,
            "-device",
            "virtio-blk-device,drive=root",
          ],
          ...["-serial", `file:${consoleLog}`],
        ],
        { stdio: "ignore" },
      );
      const exited = new Promise<void>((resolve) => qemu?.on("exit", () => resolve()));
      const deadline = Date.now() + 150_000;
      let out = "";
      while (Date.now() < deadline) {
        out = existsSync(consoleLog) ? await readFile(consoleLog, "utf8") : "";
        if (out.includes("END-LIST") || qemu.exitCode !== null) break;
        await new Promise((res) => setTimeout(res, 500));
      }
      if (qemu.exitCode === null) qemu.kill("SIGKILL");
      await exited;
      out = await readFile(consoleLog, "utf8");
      expect(out, out.slice(-3000)).toContain("END-LIST");
      expect(out).not.toMatch(/INSMOD-FAIL|MOUNT-FAIL/);

      const guest = new Map<
        string,
        { mode: number; uid: number; gid: number; size: number; type: string; sha256?: string }
      >();
      for (const line of out.split(/\r?\n/)) {
        const e = /^E\|(\d+)\|(\d+)\|(\d+)\|(\d+)\|([^|]+)\|\.\/?(.*)$/.exec(line);
        if (e)
          guest.set(e[6] as string, {
            mode: Number.parseInt(e[1] as string, 8),
            uid: +(e[2] as string),
            gid: +(e[3] as string),
            size: +(e[4] as string),
            type: e[5] as string,
          });
        const s = /^([0-9a-f]{64}) {2}\.\/(.*)$/.exec(line);
        if (s) {
          const g = guest.get(s[2] as string);
          if (g) g.sha256 = s[1];
        }
      }
      guest.delete(""); // the root itself
      const host = await listImage(image);
      expect([...guest.keys()].sort()).toEqual([...host.keys()].sort());
      const kind: Record<string, string> = {
        file: "regular file",
        dir: "directory",
        symlink: "symbolic link",
        char: "character special file",
        block: "block special file",
        fifo: "fifo",
      };
      for (const [p, h] of host) {
        const g = guest.get(p);
        expect({ p, type: g?.type, mode: g?.mode, uid: g?.uid, gid: g?.gid }).toEqual({
          p,
          type: kind[h.type],
          mode: h.mode,
          uid: h.uid,
          gid: h.gid,
        });
        if (h.type === "file")
          expect({ p, size: g?.size, sha256: g?.sha256 }).toEqual({ p, size: h.size, sha256: h.sha256 });
        if (h.type === "symlink")
          expect({ p, size: g?.size }).toEqual({ p, size: Buffer.byteLength(h.target ?? "") });
      }
    }, 240_000);
  },
);

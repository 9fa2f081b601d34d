/** Progress output of the CLI (stderr): a redrawn line on a terminal, one line per phase otherwise. */
import type { BuildProgress } from "../types";

export function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

export function progressRenderer(quiet: boolean): {
  onProgress: (e: BuildProgress) => void;
  done: () => void;
} {
  const tty = process.stderr.isTTY === true && !quiet;
  const layers = new Map<string, { done: number; total: number }>();
  let lastPhase = "";
  let lastDraw = 0;
  let drawn = false;
  const draw = (line: string, force = false) => {
    const now = Date.now();
    if (!force && now - lastDraw < 80) return;
    lastDraw = now;
    process.stderr.write(`\r\x1b[2K${line.slice(0, (process.stderr.columns ?? 100) - 1)}`);
    drawn = true;
  };
  const bar = (done: number, total: number) => {
    const width = 24;
    const f = total > 0 ? Math.min(1, done / total) : 0;
    const full = Math.round(f * width);
    return `[${"#".repeat(full)}${".".repeat(width - full)}]`;
  };
  const onProgress = (e: BuildProgress) => {
    if (quiet) return;
    if (e.phase === "pull") {
      layers.set(e.layer, { done: e.bytesDone, total: e.bytesTotal });
      let done = 0;
      let total = 0;
      for (const l of layers.values()) {
        done += l.done;
        total += l.total;
      }
      if (tty)
        draw(`pulling ${bar(done, total)} ${fmtBytes(done)} / ${fmtBytes(total)} (${layers.size} layers)`);
      else if (lastPhase !== "pull") process.stderr.write("pulling layers...\n");
      lastPhase = "pull";
      return;
    }
    if (e.phase === "rootfs" && e.bytesDone !== undefined) {
      if (tty) draw(`building root filesystem ${fmtBytes(e.bytesDone)}`);
      return;
    }
    if (e.phase === lastPhase) return;
    lastPhase = e.phase;
    const label: Record<string, string> = {
      resolve: `resolving ${"ref" in e ? e.ref : ""}`,
      rootfs: "building root filesystem",
      initramfs: "building initramfs",
      boot: "booting VM (first bake of this image)",
      warmup: "running warmup",
      snapshot: "capturing snapshot",
      done:
        e.phase === "done" ? (e.cacheHit ? "snapshot cache hit" : `snapshot ready: ${e.snapshotPath}`) : "",
    };
    const text = label[e.phase] ?? e.phase;
    if (tty) draw(text, true);
    else if (e.phase !== "resolve" && !(e.phase === "done" && e.cacheHit)) process.stderr.write(`${text}\n`);
  };
  return {
    onProgress,
    done: () => {
      if (drawn) process.stderr.write("\r\x1b[2K");
    },
  };
}

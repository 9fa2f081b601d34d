/**
 * Follows a VM's serial console log (a file QEMU appends to) and hands new bytes to `write`. The image's
 * workload writes its stdout and stderr there (the agent starts it on the console), so this is how
 * `supermachine run IMAGE` shows the workload's output.
 *
 * The hypervisor trims the file when it grows past 1 MiB (it is emptied and QEMU appends at the new
 * end): a size below the read offset means that happened, and reading restarts at 0. Output written
 * between the last poll and a trim is lost (polls are every `intervalMs`, trims at most every 500 ms).
 */
import { type FileHandle, open } from "node:fs/promises";

export interface ConsoleFollower {
  /** Read what is there now (everything written so far), then stop following. */
  stop(): Promise<void>;
}

/** CR LF → LF (the guest console is a tty with ONLCR); a CR at a chunk end waits for the next chunk. */
export function crlfFilter(): (chunk: Buffer, final?: boolean) => Buffer {
  let carry = false;
  return (chunk, final = false) => {
    let s = chunk.toString("latin1");
    if (carry) s = `\r${s}`;
    carry = false;
    if (!final && s.endsWith("\r")) {
      carry = true;
      s = s.slice(0, -1);
    }
    return Buffer.from(s.replace(/\r\n/g, "\n"), "latin1");
  };
}

export function followConsole(
  path: string,
  write: (chunk: Buffer) => void,
  opts: { intervalMs?: number /** Byte offset to start at (default 0). */; startAt?: number } = {},
): ConsoleFollower {
  const intervalMs = opts.intervalMs ?? 100;
  const filter = crlfFilter();
  let offset = -1;
  let fh: FileHandle | undefined;
  let busy: Promise<void> = Promise.resolve();
  let stopped = false;
  const buf = Buffer.alloc(64 * 1024);

  const poll = async (final: boolean): Promise<void> => {
    try {
      fh ??= await open(path, "r");
      const size = (await fh.stat()).size;
      if (offset < 0) offset = opts.startAt ?? 0;
      if (size < offset) offset = 0; // trimmed
      while (offset < size) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - offset), offset);
        if (bytesRead <= 0) break;
        offset += bytesRead;
        const out = filter(buf.subarray(0, bytesRead), final && offset >= size);
        if (out.length) write(out);
      }
      if (final) {
        const rest = filter(Buffer.alloc(0), true);
        if (rest.length) write(rest);
      }
    } catch (err) {
      // The file appears with QEMU and goes with the VM's runtime dir: nothing to follow then.
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  };
  const timer = setInterval(() => {
    busy = busy.then(() => (stopped ? undefined : poll(false))).catch(() => undefined);
  }, intervalMs);
  busy = busy.then(() => poll(false)).catch(() => undefined);
  return {
    stop: async () => {
      if (stopped) return busy;
      stopped = true;
      clearInterval(timer);
      busy = busy.then(() => poll(true)).catch(() => undefined);
      await busy;
      await fh?.close().catch(() => undefined);
      fh = undefined;
    },
  };
}

/** Minimal deterministic cpio "newc" (SVR4, no CRC) writer. */

export interface CpioEntry {
  /** Path without a leading slash, e.g. "sm/config.cbor". */
  name: string;
  /** Full st_mode including the file type bits. */
  mode: number;
  data?: Uint8Array;
  rdevMajor?: number;
  rdevMinor?: number;
}

export const CPIO_DIR = 0o040000;
export const CPIO_FILE = 0o100000;
export const CPIO_CHAR = 0o020000;

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, "0");
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Encodes entries (in the given order) plus the trailer; pads the archive to 512 bytes. */
export function encodeCpio(entries: CpioEntry[], mtime = 0): Buffer {
  const parts: Buffer[] = [];
  let size = 0;
  const push = (b: Buffer) => {
    parts.push(b);
    size += b.length;
  };
  const one = (e: CpioEntry, ino: number) => {
    const name = Buffer.from(`${e.name}\0`);
    const data = e.data ?? new Uint8Array(0);
    const isDir = (e.mode & 0o170000) === CPIO_DIR;
    const fields = [
      ino,
      e.mode,
      0, // uid
      0, // gid
      e.name === "TRAILER!!!" ? 1 : isDir ? 2 : 1,
      mtime,
      data.length,
      0,
      0,
      e.rdevMajor ?? 0,
      e.rdevMinor ?? 0,
      name.length,
      0,
    ];
    const header = Buffer.from(`070701${fields.map(hex8).join("")}`, "latin1");
    push(header);
    push(name);
    push(Buffer.alloc(pad4(header.length + name.length)));
    if (data.length) {
      push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      push(Buffer.alloc(pad4(data.length)));
    }
  };
  for (let i = 0; i < entries.length; i++) one(entries[i] as CpioEntry, i + 1);
  one({ name: "TRAILER!!!", mode: 0 }, 0);
  push(Buffer.alloc((512 - (size % 512)) % 512));
  return Buffer.concat(parts, size);
}

// Test-only helpers (not exported from the package): synthetic layers and independent readers of images.
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { lstat, mkdtemp, readdir, readFile, readlink, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { cacheRoot } from "@supermachine/base";
import { extract, pack } from "tar-stream";
import { tarLayer } from "./layers";
import type { LayerInput } from "./types";

export const execFileP = promisify(execFile);

export interface SynthEntry {
  name: string;
  type?: "file" | "directory" | "symlink" | "link" | "character-device" | "block-device" | "fifo";
  data?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: Date;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  pax?: Record<string, string>;
}

export async function tarBytes(entries: SynthEntry[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const e of entries) {
    const data = e.data === undefined ? undefined : Buffer.from(e.data);
    await new Promise<void>((resolve, reject) => {
      const header = {
        name: e.name,
        type: e.type ?? "file",
        mode: e.mode ?? (e.type === "directory" ? 0o755 : 0o644),
        uid: e.uid ?? 0,
        gid: e.gid ?? 0,
        mtime: e.mtime ?? new Date(1_600_000_000_000),
        linkname: e.linkname,
        devmajor: e.devmajor,
        devminor: e.devminor,
        size: data?.length ?? 0,
        pax: e.pax,
      };
      // biome-ignore lint/suspicious/noExplicitAny: tar-stream's typings lack `pax`
      p.entry(header as any, data ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

export async function synthLayer(digest: string, entries: SynthEntry[], gzip = false): Promise<LayerInput> {
  const tar = await tarBytes(entries);
  const bytes = gzip ? gzipSync(tar) : tar;
  return tarLayer(digest, () => Readable.from([bytes]));
}

export function bytesLayer(digest: string, bytes: Buffer): LayerInput {
  return tarLayer(digest, () => Readable.from([bytes]));
}

export async function tempDir(prefix = "sm-rootfs-test-"): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function rmrf(p: string): Promise<void> {
  await rm(p, { recursive: true, force: true });
}

/** One filesystem object as an independent reader reports it. */
export interface Item {
  type: "file" | "dir" | "symlink" | "char" | "block" | "fifo";
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  target?: string;
  dev?: string;
  mtime?: number;
  xattrs?: Record<string, string>;
  /** For files: paths sharing this inode (hard links), when known. */
  linkGroup?: string;
}

export type Listing = Map<string, Item>;

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Reads a squashfs image through `sqfs2tar` (squashfs-tools-ng), an independent implementation. */
export async function listImage(image: string): Promise<Listing> {
  const child = spawn("sqfs2tar", [image], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  const exited = new Promise<number>((resolve) => child.on("close", (code) => resolve(code ?? -1)));
  const ex = extract();
  child.stdout.pipe(ex);
  const out: Listing = new Map();
  for await (const entry of ex) {
    const h = entry.header;
    const chunks: Buffer[] = [];
    for await (const c of entry) chunks.push(c as Buffer);
    const path = h.name.replace(/^\.?\//, "").replace(/\/$/, "");
    const xattrs: Record<string, string> = {};
    // biome-ignore lint/suspicious/noExplicitAny: pax is untyped
    for (const [k, v] of Object.entries(((h as any).pax ?? {}) as Record<string, string>))
      if (k.startsWith("SCHILY.xattr.")) xattrs[k.slice(13)] = v;
    const base = {
      mode: (h.mode ?? 0) & 0o7777,
      uid: h.uid ?? 0,
      gid: h.gid ?? 0,
      mtime: Math.floor((h.mtime?.getTime() ?? 0) / 1000),
    };
    const xa = Object.keys(xattrs).length ? { xattrs } : {};
    switch (h.type) {
      case "file":
        out.set(path, {
          type: "file",
          ...base,
          ...xa,
          size: chunks.reduce((n, c) => n + c.length, 0),
          sha256: sha(Buffer.concat(chunks)),
        });
        break;
      case "link": {
        const target = out.get((h.linkname ?? "").replace(/^\.?\//, ""));
        if (!target) throw new Error(`sqfs2tar hard link to unknown ${h.linkname}`);
        target.linkGroup ??= (h.linkname ?? "").replace(/^\.?\//, "");
        out.set(path, target);
        break;
      }
      case "directory":
        out.set(path, { type: "dir", ...base, ...xa });
        break;
      case "symlink":
        out.set(path, { type: "symlink", ...base, ...xa, target: h.linkname ?? "" });
        break;
      case "character-device":
      case "block-device":
        out.set(path, {
          type: h.type === "block-device" ? "block" : "char",
          ...base,
          ...xa,
          dev: `${h.devmajor},${h.devminor}`,
        });
        break;
      case "fifo":
        out.set(path, { type: "fifo", ...base, ...xa });
        break;
      default:
        throw new Error(`unexpected entry type ${h.type} for ${path}`);
    }
  }
  const code = await exited;
  if (code !== 0) throw new Error(`sqfs2tar ${image} exited ${code}: ${stderr}`);
  return out;
}

/** Lists a directory tree on the host (lstat based), paths relative to `root`. */
export async function listDir(root: string, opts: { contents?: boolean } = {}): Promise<Listing> {
  const out: Listing = new Map();
  const inodes = new Map<string, Item>();
  const walk = async (rel: string) => {
    const entries = await readdir(join(root, rel));
    for (const name of entries) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(root, r);
      const st = await lstat(p);
      const base = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000) };
      if (st.isDirectory()) {
        out.set(r, { type: "dir", ...base });
        await walk(r);
      } else if (st.isFile()) {
        const key = `${st.dev}:${st.ino}`;
        const seen = st.nlink > 1 ? inodes.get(key) : undefined;
        if (seen) {
          seen.linkGroup ??= "hard";
          out.set(r, seen);
          continue;
        }
        const item: Item = { type: "file", ...base, size: st.size };
        if (opts.contents !== false) item.sha256 = sha(await readFile(p));
        if (st.nlink > 1) inodes.set(key, item);
        out.set(r, item);
      } else if (st.isSymbolicLink()) out.set(r, { type: "symlink", ...base, target: await readlink(p) });
      else if (st.isCharacterDevice() || st.isBlockDevice()) {
        const major = Number((BigInt(st.rdev) >> 8n) & 0xfffn);
        const minor = Number((BigInt(st.rdev) & 0xffn) | ((BigInt(st.rdev) >> 12n) & 0xfff00n));
        out.set(r, { type: st.isBlockDevice() ? "block" : "char", ...base, dev: `${major},${minor}` });
      } else if (st.isFIFO()) out.set(r, { type: "fifo", ...base });
    }
  };
  await walk("");
  return out;
}

/** Human-readable differences between two listings (empty = equal). Ignores mtimes unless asked. */
export function diffListings(
  a: Listing,
  b: Listing,
  opts: { mtime?: boolean; skip?: (p: string) => boolean } = {},
): string[] {
  const diffs: string[] = [];
  const norm = (i: Item) => {
    const { linkGroup: _l, mtime, xattrs, ...rest } = i;
    const o: Record<string, unknown> = { ...rest };
    if (opts.mtime) o.mtime = mtime;
    if (xattrs) o.xattrs = xattrs;
    return JSON.stringify(o, Object.keys(o).sort());
  };
  for (const [p, ia] of a) {
    if (opts.skip?.(p)) continue;
    const ib = b.get(p);
    if (!ib) diffs.push(`only in first: ${p}`);
    else if (norm(ia) !== norm(ib)) diffs.push(`${p}: ${norm(ia)} != ${norm(ib)}`);
  }
  for (const p of b.keys()) if (!a.has(p) && !opts.skip?.(p)) diffs.push(`only in second: ${p}`);
  return diffs;
}

/**
 * A minimal relocatable little-endian ELF64 object with a `.modinfo` section, the way a kernel module carries
 * `name=` and `depends=` (kmod's `modinfo` reads it too). Sections: null, .modinfo, .shstrtab.
 */
export function fakeModuleElf(name: string, depends: readonly string[]): Buffer {
  const modinfo = Buffer.from(
    `license=GPL\0depends=${depends.join(",")}\0name=${name}\0vermagic=6.1.0 SMP\0`,
  );
  const shstrtab = Buffer.from("\0.modinfo\0.shstrtab\0");
  const header = Buffer.alloc(64);
  header.writeUInt32BE(0x7f454c46, 0); // \x7fELF
  header[4] = 2; // ELFCLASS64
  header[5] = 1; // ELFDATA2LSB
  header[6] = 1; // EV_CURRENT
  header.writeUInt16LE(1, 0x10); // ET_REL
  header.writeUInt16LE(62, 0x12); // EM_X86_64
  header.writeUInt32LE(1, 0x14);
  const shoff = 64 + modinfo.length + shstrtab.length;
  header.writeBigUInt64LE(BigInt(shoff), 0x28);
  header.writeUInt16LE(64, 0x34); // e_ehsize
  header.writeUInt16LE(64, 0x3a); // e_shentsize
  header.writeUInt16LE(3, 0x3c); // e_shnum
  header.writeUInt16LE(2, 0x3e); // e_shstrndx
  const section = (nameOff: number, type: number, flags: number, offset: number, size: number) => {
    const s = Buffer.alloc(64);
    s.writeUInt32LE(nameOff, 0);
    s.writeUInt32LE(type, 4);
    s.writeBigUInt64LE(BigInt(flags), 8);
    s.writeBigUInt64LE(BigInt(offset), 0x18);
    s.writeBigUInt64LE(BigInt(size), 0x20);
    s.writeBigUInt64LE(1n, 0x30); // sh_addralign
    return s;
  };
  return Buffer.concat([
    header,
    modinfo,
    shstrtab,
    Buffer.alloc(64), // SHN_UNDEF
    section(1, 1 /* PROGBITS */, 2 /* ALLOC */, 64, modinfo.length),
    section(10, 3 /* STRTAB */, 0, 64 + modinfo.length, shstrtab.length),
  ]);
}

/** `lib/modules/<release>` of a real x86_64 kernel bundle provisioned by `npm run setup`, if there is one. */
export function realKernelModulesDir(): string | undefined {
  const kernels = join(cacheRoot(), "kernels");
  const bundle = existsSync(kernels) ? readdirSync(kernels).find((d) => d.endsWith("-x86_64")) : undefined;
  return bundle === undefined ? undefined : join(kernels, bundle, "modules");
}

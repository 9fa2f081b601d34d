import type { FileHandle } from "node:fs/promises";
import { promisify } from "node:util";
import { deflate as deflateCb } from "node:zlib";
import { RootfsError } from "../errors";
import type { Spool } from "../spool";
import type { DirNode, Node } from "../tree";
import * as C from "./constants";
import { Bytes, MetadataWriter, type MetaRef, packRef } from "./metadata";
import { Output } from "./output";

const deflate = promisify(deflateCb);

export interface SquashfsOptions {
  /** Data block size in bytes: a power of two, 4 KiB .. 1 MiB. */
  blockSize: number;
  /** zlib level 1..9 for gzip; null stores everything uncompressed. */
  level: number | null;
  /** Superblock modification time (seconds). */
  mtime: number;
  /** Data blocks compressed concurrently (on the libuv threadpool). */
  concurrency: number;
  onData?: (bytesDone: number, bytesTotal: number) => void;
}

export interface SquashfsResult {
  bytes: number;
  inodes: number;
}

interface BlockResult {
  pos: number;
  /** On-disk size field (size | DATA_UNCOMPRESSED); 0 for a sparse block. */
  field: number;
  /** Bytes actually stored. */
  stored: number;
}

interface FileLayout {
  blocksStart: number;
  sizes: number[];
  fragIndex: number;
  fragOffset: number;
  sparse: number;
}

interface Info {
  node: Node;
  number: number;
  nlink: number;
  parent: number;
  ref?: MetaRef;
  layout?: Promise<FileLayout>;
}

/** Orders block writes by submission while compression of several blocks runs in parallel. */
class BlockPipeline {
  private tail: Promise<unknown> = Promise.resolve();
  private readonly inflight: Promise<unknown>[] = [];
  private readonly zero: Buffer;

  constructor(
    private readonly out: Output,
    private readonly level: number | null,
    private readonly max: number,
    blockSize: number,
  ) {
    this.zero = Buffer.alloc(blockSize);
  }

  /** Queues a block; resolves (after back-pressure) with a promise of where it landed. */
  async submit(raw: Buffer, allowSparse: boolean): Promise<{ result: Promise<BlockResult> }> {
    let result: Promise<BlockResult>;
    const prev = this.tail;
    if (allowSparse && raw.length === this.zero.length && raw.equals(this.zero)) {
      result = prev.then(() => ({ pos: this.out.pos, field: 0, stored: 0 }));
    } else {
      const z = this.level === null ? Promise.resolve(null) : deflate(raw, { level: this.level });
      result = Promise.all([z, prev]).then(async ([zbuf]) => {
        const pos = this.out.pos;
        if (zbuf && zbuf.length < raw.length) {
          await this.out.write(zbuf);
          return { pos, field: zbuf.length, stored: zbuf.length };
        }
        await this.out.write(raw);
        return { pos, field: raw.length | C.DATA_UNCOMPRESSED, stored: raw.length };
      });
    }
    result.catch(() => {}); // handled by whoever awaits it; avoid unhandled-rejection crashes on early exit
    this.tail = result;
    this.inflight.push(result);
    while (this.inflight.length >= this.max) await this.inflight.shift();
    return { result };
  }

  async drain(): Promise<void> {
    await this.tail;
  }
}

function basicType(node: Node): number {
  switch (node.kind) {
    case "dir":
      return C.T_DIR;
    case "file":
      return C.T_FILE;
    case "symlink":
      return C.T_SYMLINK;
    case "block":
      return C.T_BLOCK;
    case "char":
      return C.T_CHAR;
    case "fifo":
      return C.T_FIFO;
    case "socket":
      return C.T_SOCKET;
  }
}

/** Linux dev_t encoding used by squashfs (new_encode_dev). */
function encodeDev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

type Sorted = Array<{ name: Buffer; node: Node }>;

/** Writes the tree as a squashfs 4.0 image into `fh` (from offset 0). */
export async function writeSquashfs(
  root: DirNode,
  spool: Spool,
  fh: FileHandle,
  opts: SquashfsOptions,
): Promise<SquashfsResult> {
  const B = opts.blockSize;
  const level = opts.level;

  // 1. Number inodes breadth-first (siblings get consecutive numbers: compact directory headers), count links.
  const infos = new Map<Node, Info>();
  const sortedCache = new Map<DirNode, Sorted>();
  const order: Info[] = [];
  const add = (node: Node, parent: number): Info => {
    const info: Info = { node, number: order.length + 1, nlink: 0, parent };
    infos.set(node, info);
    order.push(info);
    return info;
  };
  const rootInfo = add(root, 0);
  const dirs: Info[] = [rootInfo];
  for (let qi = 0; qi < dirs.length; qi++) {
    const dinfo = dirs[qi] as Info;
    const dir = dinfo.node as DirNode;
    const sorted: Sorted = [];
    for (const [name, child] of dir.children) sorted.push({ name: Buffer.from(name), node: child.node });
    sorted.sort((a, b) => Buffer.compare(a.name, b.name));
    sortedCache.set(dir, sorted);
    let subdirs = 0;
    for (const { name, node } of sorted) {
      if (name.length > C.NAME_MAX || name.length === 0)
        throw new RootfsError(
          "SM_NAME_TOO_LONG",
          `name "${name.toString().slice(0, 40)}..." is ${name.length} bytes; squashfs allows 1..${C.NAME_MAX}`,
        );
      let info = infos.get(node);
      if (!info) {
        info = add(node, dinfo.number);
        if (node.kind === "dir") dirs.push(info);
      } else if (node.kind === "dir") {
        throw new RootfsError(
          "SM_SQUASHFS_LIMIT",
          "a directory appears twice in the tree (directory hard link)",
        );
      }
      info.nlink++;
      if (node.kind === "dir") subdirs++;
    }
    dinfo.nlink = 2 + subdirs;
  }
  rootInfo.parent = order.length + 1;

  // 2. Data blocks and fragments, in inode-number order, deduplicated by content hash.
  const out = new Output(fh, C.SUPERBLOCK_BYTES);
  const pipe = new BlockPipeline(out, level, Math.max(2, opts.concurrency), B);
  const fragEntries: Promise<BlockResult>[] = [];
  let fragParts: Buffer[] = [];
  let fragFill = 0;
  const flushFragment = async () => {
    if (fragFill === 0) return;
    const block = fragParts.length === 1 ? (fragParts[0] as Buffer) : Buffer.concat(fragParts, fragFill);
    fragParts = [];
    fragFill = 0;
    fragEntries.push((await pipe.submit(block, false)).result);
  };
  const dedup = new Map<string, Promise<FileLayout>>();
  let total = 0;
  for (const info of order) if (info.node.kind === "file") total += info.node.content.size;
  let done = 0;

  // Data order is free in squashfs; depth-first path order keeps a directory's small files together in
  // fragment blocks (they compress well together), like mksquashfs.
  const files: Info[] = [];
  const collect = (dir: DirNode) => {
    for (const { node } of sortedCache.get(dir) as Sorted) {
      if (node.kind === "dir") collect(node);
      else if (node.kind === "file") {
        const info = infos.get(node) as Info;
        if (!seen.has(info)) {
          seen.add(info);
          files.push(info);
        }
      }
    }
  };
  const seen = new Set<Info>();
  collect(root);
  for (const info of files) {
    const node = info.node;
    if (node.kind !== "file") continue;
    const c = node.content;
    if (c.size === 0) {
      info.layout = Promise.resolve({
        blocksStart: 0,
        sizes: [],
        fragIndex: C.NONE32,
        fragOffset: 0,
        sparse: 0,
      });
      continue;
    }
    const key = `${c.size}:${c.hash}`;
    const known = dedup.get(key);
    if (known) {
      info.layout = known;
      done += c.size;
      continue;
    }
    const full = Math.floor(c.size / B);
    const tail = c.size % B;
    const blocks: Promise<BlockResult>[] = [];
    for (let i = 0; i < full; i++) {
      const buf = Buffer.allocUnsafe(B);
      await spool.read(buf, c.offset + i * B, B);
      blocks.push((await pipe.submit(buf, true)).result);
      done += B;
      opts.onData?.(done, total);
    }
    let fragIndex = C.NONE32;
    let fragOffset = 0;
    if (tail > 0) {
      const buf = Buffer.allocUnsafe(tail);
      await spool.read(buf, c.offset + full * B, tail);
      if (fragFill + tail > B) await flushFragment();
      fragIndex = fragEntries.length;
      fragOffset = fragFill;
      fragParts.push(buf);
      fragFill += tail;
      done += tail;
      opts.onData?.(done, total);
    }
    const layout = Promise.all(blocks).then((rs) => {
      let sparse = 0;
      for (const r of rs) if (r.field === 0) sparse += B;
      return { blocksStart: rs[0]?.pos ?? 0, sizes: rs.map((r) => r.field), fragIndex, fragOffset, sparse };
    });
    layout.catch(() => {});
    info.layout = layout;
    dedup.set(key, layout);
  }
  await flushFragment();
  await pipe.drain();
  const fragResults = await Promise.all(fragEntries);
  const layouts = new Map<Info, FileLayout>();
  for (const info of order) if (info.layout) layouts.set(info, await info.layout);
  await out.flush();

  // 3. Ids and xattrs.
  const idSet = new Set<number>();
  for (const info of order) {
    idSet.add(info.node.uid >>> 0);
    idSet.add(info.node.gid >>> 0);
  }
  const ids = [...idSet].sort((a, b) => a - b);
  if (ids.length > 65536)
    throw new RootfsError("SM_SQUASHFS_LIMIT", `${ids.length} distinct uids/gids; squashfs allows 65536`);
  const idIndex = new Map(ids.map((id, i) => [id, i]));

  const xattrW = new MetadataWriter(level);
  const xattrIds: Array<{ ref: MetaRef; count: number; size: number }> = [];
  const xattrKeyToId = new Map<string, number>();
  const xattrIdOf = (node: Node): number => {
    if (!node.xattrs || node.xattrs.size === 0) return C.NONE32;
    const pairs = [...node.xattrs].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const key = pairs.map(([k, v]) => `${k}\0${v.toString("hex")}`).join("\0");
    const known = xattrKeyToId.get(key);
    if (known !== undefined) return known;
    const ref = xattrW.ref();
    const b = new Bytes();
    for (const [name, value] of pairs) {
      const prefix = C.XATTR_PREFIXES.find(([p]) => name.startsWith(p));
      if (!prefix) continue;
      const short = Buffer.from(name.slice(prefix[0].length));
      b.u16(prefix[1]).u16(short.length).bytes(short).u32(value.length).bytes(value);
    }
    const rec = b.take();
    xattrW.write(rec);
    const id = xattrIds.length;
    xattrIds.push({ ref, count: pairs.length, size: rec.length });
    xattrKeyToId.set(key, id);
    return id;
  };

  // 4. Inode and directory tables, children before parents (a directory needs its listing's position).
  const inodeW = new MetadataWriter(level);
  const dirW = new MetadataWriter(level);
  const b = new Bytes();
  const header = (info: Info, type: number): void => {
    const n = info.node;
    b.u16(type)
      .u16(n.mode & 0o7777) // permission bits only: the type comes from the inode type
      .u16(idIndex.get(n.uid >>> 0) as number)
      .u16(idIndex.get(n.gid >>> 0) as number)
      .u32(n.mtime)
      .u32(info.number);
  };

  const emitLeaf = (info: Info): void => {
    const n = info.node;
    const xid = xattrIdOf(n);
    const ext = xid !== C.NONE32;
    info.ref = inodeW.ref();
    switch (n.kind) {
      case "file": {
        const l = layouts.get(info) as FileLayout;
        const size = n.content.size;
        if (ext || info.nlink > 1 || l.sparse > 0 || size > 0xffffffff || l.blocksStart > 0xffffffff) {
          header(info, C.T_FILE + C.EXT);
          b.u64(l.blocksStart)
            .u64(size)
            .u64(l.sparse)
            .u32(info.nlink)
            .u32(l.fragIndex)
            .u32(l.fragOffset)
            .u32(xid);
        } else {
          header(info, C.T_FILE);
          b.u32(l.blocksStart).u32(l.fragIndex).u32(l.fragOffset).u32(size);
        }
        for (const s of l.sizes) b.u32(s);
        break;
      }
      case "symlink": {
        const target = Buffer.from(n.target);
        header(info, C.T_SYMLINK + (ext ? C.EXT : 0));
        b.u32(info.nlink).u32(target.length).bytes(target);
        if (ext) b.u32(xid);
        break;
      }
      case "block":
      case "char":
        header(info, basicType(n) + (ext ? C.EXT : 0));
        b.u32(info.nlink).u32(encodeDev(n.major, n.minor));
        if (ext) b.u32(xid);
        break;
      case "fifo":
      case "socket":
        header(info, basicType(n) + (ext ? C.EXT : 0));
        b.u32(info.nlink);
        if (ext) b.u32(xid);
        break;
      case "dir":
        throw new Error("unreachable");
    }
    inodeW.write(b.take());
  };

  const emitDir = (info: Info): void => {
    const dir = info.node as DirNode;
    const sorted = sortedCache.get(dir) as Sorted;
    for (const { node } of sorted) {
      const ci = infos.get(node) as Info;
      if (node.kind === "dir") emitDir(ci);
      else if (!ci.ref) emitLeaf(ci);
    }
    // Group entries into runs sharing a header; a run never crosses a metadata block of the directory table,
    // so each block boundary gets a header that a directory index can point at.
    const listingRef = dirW.ref();
    const startTotal = dirW.totalBytes;
    // Only listings bigger than a metadata block get an index (smaller ones are read in one go anyway).
    let estimate = 0;
    for (const e of sorted) estimate += 8 + e.name.length;
    const indexed = estimate + 12 > C.METADATA_BYTES;
    const index: Array<{ offset: number; block: number; name: Buffer }> = [];
    let lastIndexedBlock = Math.floor(startTotal / C.METADATA_BYTES);
    let i = 0;
    while (i < sorted.length) {
      const first = infos.get((sorted[i] as Sorted[number]).node) as Info;
      const startBlock = (first.ref as MetaRef).block;
      const base = first.number;
      const hdrPos = dirW.totalBytes;
      const hdrMetaBlock = Math.floor(hdrPos / C.METADATA_BYTES);
      let pos = hdrPos + 12;
      let j = i;
      while (j < sorted.length && j - i < C.DIR_HEADER_MAX) {
        const e = sorted[j] as Sorted[number];
        const ci = infos.get(e.node) as Info;
        if ((ci.ref as MetaRef).block !== startBlock) break;
        if (Math.abs(ci.number - base) > C.DIR_INODE_DELTA_MAX) break;
        if (indexed && j > i && Math.floor(pos / C.METADATA_BYTES) !== hdrMetaBlock) break;
        pos += 8 + e.name.length;
        j++;
      }
      if (indexed && hdrMetaBlock !== lastIndexedBlock) {
        index.push({
          offset: hdrPos - startTotal,
          block: dirW.ref().block,
          name: (sorted[i] as Sorted[number]).name,
        });
        lastIndexedBlock = hdrMetaBlock;
      }
      b.u32(j - i - 1)
        .u32(startBlock)
        .u32(base);
      for (let k = i; k < j; k++) {
        const e = sorted[k] as Sorted[number];
        const ci = infos.get(e.node) as Info;
        const r = ci.ref as MetaRef;
        b.u16(r.offset)
          .i16(ci.number - base)
          .u16(basicType(e.node))
          .u16(e.name.length - 1)
          .bytes(e.name);
      }
      dirW.write(b.take());
      i = j;
    }
    const fileSize = dirW.totalBytes - startTotal + 3;
    const xid = xattrIdOf(dir);
    info.ref = inodeW.ref();
    if (index.length > 0 || fileSize > 0xffff || xid !== C.NONE32) {
      header(info, C.T_DIR + C.EXT);
      b.u32(info.nlink)
        .u32(fileSize)
        .u32(listingRef.block)
        .u32(info.parent)
        .u16(index.length)
        .u16(listingRef.offset)
        .u32(xid);
      for (const x of index)
        b.u32(x.offset)
          .u32(x.block)
          .u32(x.name.length - 1)
          .bytes(x.name);
    } else {
      header(info, C.T_DIR);
      b.u32(listingRef.block).u32(info.nlink).u16(fileSize).u16(listingRef.offset).u32(info.parent);
    }
    inodeW.write(b.take());
  };
  emitDir(rootInfo);
  const rootRef = rootInfo.ref as MetaRef;

  // 5. Lay out the tables after the data: inodes, directories, fragments, ids, xattrs (the kernel checks
  // that each table ends exactly where the next begins).
  const inodeTable = inodeW.finish();
  const dirTable = dirW.finish();
  const inodeTableStart = out.pos;
  await out.write(inodeTable.data);
  const dirTableStart = out.pos;
  await out.write(dirTable.data);

  const writeIndexed = async (fill: (w: MetadataWriter) => void): Promise<number> => {
    const w = new MetadataWriter(level);
    fill(w);
    const t = w.finish();
    const tableStart = out.pos;
    await out.write(t.data);
    const idx = new Bytes();
    for (const s of t.blockStarts) idx.u64(tableStart + s);
    const indexStart = out.pos;
    await out.write(idx.take());
    return indexStart;
  };

  const fragmentTableStart = await writeIndexed((w) => {
    const e = new Bytes();
    for (const r of fragResults) e.u64(r.pos).u32(r.field).u32(0);
    if (e.length) w.write(e.take());
  });
  const idTableStart = await writeIndexed((w) => {
    const e = new Bytes();
    for (const id of ids) e.u32(id);
    w.write(e.take());
  });

  let xattrIdTableStart = -1;
  if (xattrIds.length > 0) {
    const kv = xattrW.finish();
    const kvStart = out.pos;
    await out.write(kv.data);
    const idW = new MetadataWriter(level);
    const e = new Bytes();
    for (const x of xattrIds) e.u64(packRef(x.ref)).u32(x.count).u32(x.size);
    idW.write(e.take());
    const idt = idW.finish();
    const idtStart = out.pos;
    await out.write(idt.data);
    xattrIdTableStart = out.pos;
    const h = new Bytes().u64(kvStart).u32(xattrIds.length).u32(0);
    for (const s of idt.blockStarts) h.u64(idtStart + s);
    await out.write(h.take());
  }

  const bytesUsed = out.pos;
  const pad = (4096 - (bytesUsed % 4096)) % 4096;
  if (pad) await out.write(Buffer.alloc(pad));
  await out.flush();

  let flags = C.FLAG_DUPLICATES | C.FLAG_ALWAYS_FRAGMENTS;
  if (xattrIds.length === 0) flags |= C.FLAG_NO_XATTRS;
  if (level === null)
    flags |=
      C.FLAG_UNCOMPRESSED_INODES |
      C.FLAG_UNCOMPRESSED_DATA |
      C.FLAG_UNCOMPRESSED_FRAGMENTS |
      C.FLAG_UNCOMPRESSED_IDS |
      C.FLAG_UNCOMPRESSED_XATTRS;
  const sb = Buffer.alloc(C.SUPERBLOCK_BYTES);
  sb.writeUInt32LE(C.MAGIC, 0);
  sb.writeUInt32LE(order.length, 4);
  sb.writeUInt32LE(opts.mtime >>> 0, 8);
  sb.writeUInt32LE(B, 12);
  sb.writeUInt32LE(fragResults.length, 16);
  sb.writeUInt16LE(C.COMPRESSOR_GZIP, 20);
  sb.writeUInt16LE(Math.log2(B), 22);
  sb.writeUInt16LE(flags, 24);
  sb.writeUInt16LE(ids.length, 26);
  sb.writeUInt16LE(4, 28);
  sb.writeUInt16LE(0, 30);
  sb.writeBigUInt64LE(packRef(rootRef), 32);
  sb.writeBigUInt64LE(BigInt(bytesUsed), 40);
  sb.writeBigUInt64LE(BigInt(idTableStart), 48);
  sb.writeBigUInt64LE(xattrIdTableStart < 0 ? 0xffffffffffffffffn : BigInt(xattrIdTableStart), 56);
  sb.writeBigUInt64LE(BigInt(inodeTableStart), 64);
  sb.writeBigUInt64LE(BigInt(dirTableStart), 72);
  sb.writeBigUInt64LE(BigInt(fragmentTableStart), 80);
  sb.writeBigUInt64LE(0xffffffffffffffffn, 88);
  await fh.write(sb, 0, sb.length, 0);
  return { bytes: bytesUsed + pad, inodes: order.length };
}

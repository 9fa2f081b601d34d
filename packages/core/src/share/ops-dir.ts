/**
 * Op handlers on directories: OPENDIR, READDIR, READDIRPLUS. A listing is a snapshot taken at
 * offset 0, so that offsets (index + 1) stay stable while the directory changes.
 */
import * as fs from "node:fs";
import type { ShareContext } from "./context";
import { type DirEntry, fakeIno, writeDirent } from "./encode";
import type { Handle } from "./handles";
import { E, errnoOf, fail, isDotName, O, O_PATH, openFd, S_IFMT, self, statAt } from "./host-fs";
import type { Node } from "./nodes";
import { align8, DIRENT_NAME_OFFSET, DIRENTPLUS_NAME_OFFSET, DT, ENTRY_OUT_SIZE, MAX_READ } from "./proto";

export async function opendir(s: ShareContext, nodeid: bigint): Promise<Buffer> {
  s.handles.checkCap();
  const n = s.nodes.node(nodeid);
  // Handles own their fd: reopen the directory inode through the lease's magic link.
  const fd = await s.dirs.withDir(n, (dfd) => openFd(self(dfd), O_PATH | O.O_DIRECTORY));
  return s.handles.add({ kind: "dir", fd, accmode: 0, node: n });
}

function direntType(d: fs.Dirent<Buffer>): number {
  if (d.isFile()) return DT.REG;
  if (d.isDirectory()) return DT.DIR;
  if (d.isSymbolicLink()) return DT.LNK;
  if (d.isFIFO()) return DT.FIFO;
  if (d.isSocket()) return DT.SOCK;
  if (d.isCharacterDevice()) return DT.CHR;
  if (d.isBlockDevice()) return DT.BLK;
  return DT.UNKNOWN;
}

/** Parses fuse_read_in of READDIR/READDIRPLUS; (re)takes the snapshot at offset 0. */
async function listing(
  s: ShareContext,
  body: Buffer,
): Promise<{ h: Handle; entries: DirEntry[]; start: number; size: number }> {
  if (body.length < 24) fail(E.EINVAL);
  const h = s.handles.fromBody(body, "dir");
  const offset = body.readBigUInt64LE(8);
  const size = Math.min(body.readUInt32LE(16), MAX_READ);
  if (offset === 0n || !h.entries) {
    // Snapshot at rewind: offsets (= index + 1) stay stable while the directory changes.
    const list = await fs.promises.readdir(self(h.fd), { encoding: "buffer", withFileTypes: true });
    h.entries = [
      { name: Buffer.from("."), type: DT.DIR },
      { name: Buffer.from(".."), type: DT.DIR },
      ...list.map((d) => ({ name: d.name as unknown as Buffer, type: direntType(d) })),
    ];
  }
  const entries = h.entries;
  const start = offset > BigInt(entries.length) ? entries.length : Number(offset);
  return { h, entries, start, size };
}

export async function readdir(s: ShareContext, _nodeid: bigint, body: Buffer): Promise<Buffer> {
  const { entries, start, size } = await listing(s, body);
  const parts: Buffer[] = [];
  let used = 0;
  for (let i = start; i < entries.length; i++) {
    const e = entries[i]!;
    const rec = align8(DIRENT_NAME_OFFSET + e.name.length);
    if (used + rec > size) break;
    const b = Buffer.alloc(rec);
    writeDirent(b, 0, BigInt(fakeIno(e.name)), i + 1, e, e.type);
    parts.push(b);
    used += rec;
  }
  return Buffer.concat(parts, used);
}

/**
 * READDIRPLUS: READDIR where each entry also carries the fuse_entry_out that a LOOKUP of it would
 * return, made by the same code as LOOKUP: `statAt` relative to the directory node's no-follow
 * lease, the deny check, `remember`. Every entry sent with a non-zero nodeid counts as one lookup
 * (the kernel links it or FORGETs it, even past the caller's buffer). An entry is sent with nodeid
 * 0 (a plain dirent; the kernel LOOKUPs it itself if used) when it is "." or "..", a host symlink
 * under "deny" (its LOOKUP is EACCES), gone or not stat-able, when the node table is full, or when
 * the directory node itself is gone. Only the entries that fit in the requested size are stat'ed
 * and counted; the reply never exceeds that size.
 */
export async function readdirplus(s: ShareContext, _nodeid: bigint, body: Buffer): Promise<Buffer> {
  // Only when negotiated: a kernel that did not agree to it never sends it.
  if (!s.plus) fail(E.ENOSYS);
  const { h, entries, start, size } = await listing(s, body);
  let end = start;
  let used = 0;
  while (end < entries.length) {
    const rec = align8(DIRENTPLUS_NAME_OFFSET + entries[end]!.name.length);
    if (used + rec > size) break;
    used += rec;
    end++;
  }
  const out = Buffer.alloc(used);
  const dir = h.node;
  const follow = s.policy === "follow";
  let stats: (fs.BigIntStats | null)[] = [];
  if (end > start && s.nodes.isLive(dir)) {
    stats = await s.dirs
      .withDir(dir, (dfd) =>
        Promise.all(
          entries
            .slice(start, end)
            .map((e) => (isDotName(e.name) ? null : statAt(dfd, e.name, follow).catch(() => null))),
        ),
      )
      .catch(() => []);
  }
  const canRemember = s.nodes.isLive(dir);
  let pos = 0;
  for (let i = start; i < end; i++) {
    const e = entries[i]!;
    const st = stats[i - start] ?? null;
    let node: Node | null = null;
    if (canRemember && st && !(s.policy === "deny" && st.isSymbolicLink())) {
      try {
        node = s.nodes.remember(dir!, e.name, st);
      } catch (err) {
        if (errnoOf(err) !== E.ENFILE) throw err;
      }
    }
    if (node && st) {
      s.enc.writeEntry(out, pos, node, st);
      writeDirent(
        out,
        pos + ENTRY_OUT_SIZE,
        BigInt.asUintN(64, st.ino),
        i + 1,
        e,
        (Number(st.mode) & S_IFMT) >>> 12,
      );
    } else {
      // Entry part all zero: nodeid 0.
      writeDirent(out, pos + ENTRY_OUT_SIZE, BigInt(fakeIno(e.name)), i + 1, e, e.type);
    }
    pos += align8(DIRENTPLUS_NAME_OFFSET + e.name.length);
  }
  return out;
}

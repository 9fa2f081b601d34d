import { createReadStream } from "node:fs";
import { isRootfsError, RootfsError } from "./errors";
import type { Spool } from "./spool";
import { type Child, type DirNode, type Node, newDir, type Xattrs } from "./tree";
import type { ExtraFile, LayerEntry, LayerInput, TarHeader } from "./types";

/** squashfs stores a name length as a 16-bit "length - 1" but the kernel refuses names over 256 bytes. */
export const MAX_NAME_BYTES = 256;
const WHITEOUT = ".wh.";
const OPAQUE = ".wh..wh..opq";
const XATTR_PREFIXES = ["user.", "trusted.", "security."];

export interface FlattenOptions {
  /** mtime (seconds) for directories created implicitly (parents missing from a layer) and extra files. */
  mtime: number;
  onEntry?: (layer: number, path: string) => void;
}

export interface FlattenStats {
  entries: number;
}

class EntryError extends Error {}

/** Splits a tar path into components; `..` that would leave the root is an error, absolute paths are made relative. */
export function splitPath(name: string): string[] {
  const parts: string[] = [];
  for (const p of name.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") {
      if (parts.length === 0) throw new EntryError("path escapes the image root (..)");
      parts.pop();
      continue;
    }
    if (p.includes("\0")) throw new EntryError("path contains a NUL byte");
    if (Buffer.byteLength(p) > MAX_NAME_BYTES)
      throw new RootfsError(
        "SM_NAME_TOO_LONG",
        `name component is longer than ${MAX_NAME_BYTES} bytes (squashfs limit): ${p.slice(0, 40)}...`,
      );
    parts.push(p);
  }
  return parts;
}

function clampTime(d: Date | undefined, fallback: number): number {
  if (!d) return fallback;
  const s = Math.floor(d.getTime() / 1000);
  if (!Number.isFinite(s) || s < 0) return 0;
  return Math.min(s, 0xffffffff);
}

function xattrsFromPax(pax: Record<string, string> | null | undefined): Xattrs | undefined {
  if (!pax) return undefined;
  let out: Xattrs | undefined;
  for (const [k, v] of Object.entries(pax)) {
    let name: string;
    let value: Buffer;
    if (k.startsWith("SCHILY.xattr.")) {
      name = k.slice("SCHILY.xattr.".length);
      // tar-stream decodes PAX values as UTF-8; re-encode (lossless for UTF-8 values).
      value = Buffer.from(v, "utf8");
    } else if (k.startsWith("LIBARCHIVE.xattr.")) {
      name = decodeURIComponent(k.slice("LIBARCHIVE.xattr.".length));
      value = Buffer.from(v, "base64");
    } else continue;
    if (!XATTR_PREFIXES.some((p) => name.startsWith(p))) continue; // squashfs cannot store e.g. system.*
    out ??= new Map();
    out.set(name, value);
  }
  return out;
}

async function drain(stream: LayerEntry["stream"]): Promise<void> {
  for await (const _ of stream as AsyncIterable<unknown>) {
    // discard
  }
}

/** Applies OCI layers (lowest first) onto an in-memory tree; file contents go to the spool. */
export class Flattener {
  readonly root: DirNode;
  entries = 0;

  constructor(
    private readonly spool: Spool,
    private readonly opts: FlattenOptions,
  ) {
    this.root = newDir({ mode: 0o755, uid: 0, gid: 0, mtime: opts.mtime });
  }

  async applyLayer(layer: LayerInput, index: number): Promise<void> {
    let current = "";
    try {
      for await (const entry of layer.entries()) {
        current = entry.header.name;
        this.opts.onEntry?.(index, current);
        await this.applyEntry(entry, index + 1);
        this.entries++;
      }
    } catch (err) {
      if (isRootfsError(err) && err.code !== "SM_LAYER_INVALID") {
        throw new RootfsError(err.code, `layer ${layer.digest}, entry "${current}": ${err.message}`, {
          cause: err,
          details: { layer: layer.digest, entry: current },
        });
      }
      const what = current === "" ? "before the first entry" : `at or after entry "${current}"`;
      const detail = err instanceof Error ? err.message : String(err);
      throw new RootfsError(
        "SM_LAYER_INVALID",
        `layer ${layer.digest} is invalid ${what}: ${detail}. Re-pull the image; if it persists the image itself is broken.`,
        { cause: err, details: { layer: layer.digest, entry: current } },
      );
    }
  }

  /** Walks to the parent directory of `parts`; creates missing parents unless `create` is false. */
  private parentOf(parts: string[], layer: number, create: boolean): DirNode | undefined {
    let dir = this.root;
    for (let i = 0; i < parts.length - 1; i++) {
      const name = parts[i] as string;
      const child = dir.children.get(name);
      if (child?.node.kind === "dir") {
        dir = child.node;
        continue;
      }
      if (child?.node.kind === "symlink")
        throw new EntryError(`path passes through the symlink /${parts.slice(0, i + 1).join("/")}`);
      if (!create) return undefined;
      const made = newDir({ mode: 0o755, uid: 0, gid: 0, mtime: this.opts.mtime });
      dir.children.set(name, { node: made, layer });
      dir = made;
    }
    return dir;
  }

  private lookup(parts: string[]): Node | undefined {
    let node: Node = this.root;
    for (const p of parts) {
      if (node.kind !== "dir") return undefined;
      const child = node.children.get(p);
      if (!child) return undefined;
      node = child.node;
    }
    return node;
  }

  private async applyEntry(entry: LayerEntry, layer: number): Promise<void> {
    const h: TarHeader = entry.header;
    // undefined: a producer that does not set the type (regular file); null: tar-stream's "unknown typeflag".
    const type = h.type === undefined ? "file" : h.type;
    if (
      type === "pax-global-header" ||
      type === "pax-header" ||
      type === "gnu-long-path" ||
      type === "gnu-long-link-path"
    ) {
      await drain(entry.stream);
      return;
    }
    const parts = splitPath(h.name);
    const meta = {
      mode: (h.mode ?? (type === "directory" ? 0o755 : 0o644)) & 0o7777,
      uid: h.uid ?? 0,
      gid: h.gid ?? 0,
      mtime: clampTime(h.mtime, this.opts.mtime),
    };
    const xattrs = xattrsFromPax(h.pax);
    if (xattrs) Object.assign(meta, { xattrs });

    if (parts.length === 0) {
      if (type !== "directory") throw new EntryError("the image root must be a directory");
      Object.assign(this.root, meta);
      await drain(entry.stream);
      return;
    }
    const name = parts[parts.length - 1] as string;

    if (name.startsWith(WHITEOUT)) {
      await drain(entry.stream);
      const dir = this.parentOf(parts, layer, false);
      if (!dir) return;
      if (name === OPAQUE) {
        pruneLower(dir, layer);
      } else if (!name.startsWith(`${WHITEOUT}${WHITEOUT}`)) {
        const victim = name.slice(WHITEOUT.length);
        if (victim === "" || victim === "." || victim === "..") throw new EntryError("invalid whiteout name");
        const child = dir.children.get(victim);
        // A whiteout hides lower layers only; an entry written by this same layer stays.
        if (child && child.layer < layer) dir.children.delete(victim);
      }
      return;
    }

    const dir = this.parentOf(parts, layer, true) as DirNode;
    const existing = dir.children.get(name);
    let node: Node;
    switch (type) {
      case "directory": {
        await drain(entry.stream);
        if (existing?.node.kind === "dir") {
          const { children } = existing.node;
          const updated = existing.node as DirNode;
          updated.xattrs = undefined;
          Object.assign(updated, meta, { children });
          existing.layer = layer;
          return;
        }
        node = newDir(meta);
        break;
      }
      case "file":
      case "contiguous-file": {
        if (h.pax && Object.keys(h.pax).some((k) => k.startsWith("GNU.sparse.")))
          throw new EntryError(
            "GNU sparse tar entries are not supported (re-create the layer without tar --sparse)",
          );
        const content = await this.spool.append(entry.stream as AsyncIterable<Uint8Array>);
        if (h.size !== undefined && content.size !== h.size)
          throw new EntryError(`content is ${content.size} bytes, header says ${h.size} (truncated)`);
        node = { kind: "file", content, ...meta };
        break;
      }
      case "link": {
        await drain(entry.stream);
        if (!h.linkname) throw new EntryError("hard link without a target");
        const target = this.lookup(splitPath(h.linkname));
        if (!target)
          throw new EntryError(`hard link target "${h.linkname}" does not exist in this or a lower layer`);
        if (target.kind === "dir") throw new EntryError(`hard link target "${h.linkname}" is a directory`);
        node = target;
        break;
      }
      case "symlink": {
        await drain(entry.stream);
        if (Buffer.byteLength(h.linkname ?? "") > 4095)
          throw new RootfsError(
            "SM_NAME_TOO_LONG",
            "symlink target is longer than 4095 bytes (the kernel refuses such squashfs symlinks)",
          );
        node = { kind: "symlink", target: h.linkname ?? "", ...meta };
        break;
      }
      case "character-device":
      case "block-device": {
        await drain(entry.stream);
        node = {
          kind: type === "block-device" ? "block" : "char",
          major: h.devmajor ?? 0,
          minor: h.devminor ?? 0,
          ...meta,
        };
        break;
      }
      case "fifo": {
        await drain(entry.stream);
        node = { kind: "fifo", ...meta };
        break;
      }
      default:
        throw new EntryError(`unsupported tar entry type "${type}"`);
    }
    dir.children.set(name, { node, layer });
  }

  /** Adds files on top of the layers (highest priority). */
  async addExtraFiles(files: ExtraFile[]): Promise<void> {
    const layer = Number.MAX_SAFE_INTEGER;
    for (const f of files) {
      if (typeof f.guestPath !== "string" || !f.guestPath.startsWith("/"))
        throw new RootfsError(
          "SM_ROOTFS_CONFIG",
          `extraFiles: guestPath must be an absolute path, got ${JSON.stringify(f.guestPath)}`,
        );
      if ((f.data === undefined) === (f.hostPath === undefined))
        throw new RootfsError(
          "SM_ROOTFS_CONFIG",
          `extraFiles ${f.guestPath}: give exactly one of data or hostPath`,
        );
      let parts: string[];
      let dir: DirNode;
      try {
        parts = splitPath(f.guestPath);
        if (parts.length === 0) throw new EntryError("cannot replace the root directory");
        dir = this.parentOf(parts, layer, true) as DirNode;
      } catch (err) {
        if (isRootfsError(err)) throw err;
        throw new RootfsError("SM_ROOTFS_CONFIG", `extraFiles ${f.guestPath}: ${(err as Error).message}`, {
          cause: err,
        });
      }
      const content =
        f.data !== undefined
          ? await this.spool.appendBuffer(typeof f.data === "string" ? Buffer.from(f.data) : f.data)
          : await this.spool.append(createReadStream(f.hostPath as string)).catch((err: unknown) => {
              throw new RootfsError(
                "SM_ROOTFS_CONFIG",
                `extraFiles ${f.guestPath}: cannot read ${f.hostPath}: ${(err as Error).message}`,
                { cause: err },
              );
            });
      const node: Node = {
        kind: "file",
        content,
        mode: (f.mode ?? 0o644) & 0o7777,
        uid: f.uid ?? 0,
        gid: f.gid ?? 0,
        mtime: this.opts.mtime,
      };
      dir.children.set(parts[parts.length - 1] as string, { node, layer });
    }
  }
}

/** Opaque directory: drop everything lower layers put in `dir`, keep what `layer` itself wrote. */
function pruneLower(dir: DirNode, layer: number): boolean {
  let kept = false;
  for (const [name, child] of dir.children) {
    const own = child.layer >= layer;
    const keepsDescendants = child.node.kind === "dir" && pruneLower(child.node, layer);
    if (own || keepsDescendants) kept = true;
    else dir.children.delete(name);
  }
  return kept;
}

export type { Child };

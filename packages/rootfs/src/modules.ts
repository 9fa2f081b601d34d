import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import { decompress as zstdDecompress } from "fzstd";
import { RootfsError } from "./errors";

const execFileP = promisify(execFile);
const KO_RE = /\.ko(\.xz|\.zst|\.gz)?$/;

/** Module name as the kernel knows it: file base name without .ko*, dashes as underscores. */
export function moduleName(pathOrName: string): string {
  const base = pathOrName.slice(pathOrName.lastIndexOf("/") + 1);
  return base.replace(KO_RE, "").replace(/-/g, "_");
}

export interface ResolvedModule {
  /** Module name as the kernel knows it (dashes as underscores), e.g. "virtio_mmio". */
  name: string;
  /** Path relative to the modules dir, e.g. "kernel/drivers/virtio/virtio_mmio.ko" (may end in .xz/.zst/.gz). */
  path: string;
}

/**
 * Reads the `depends=` field of a module's .modinfo ELF section (fallback when modules.dep is missing).
 * Takes the uncompressed module (see readModule). Throws on anything that is not a little-endian ELF64 object.
 */
export function modinfoDepends(elf: Buffer): string[] {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) throw new Error("not an ELF file");
  if (elf[4] !== 2 || elf[5] !== 1) throw new Error("only little-endian ELF64 modules are supported");
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  if (shentsize < 0x28 || shoff + shnum * shentsize > elf.length || shstrndx >= shnum)
    throw new Error("truncated or malformed ELF section header table");
  const sect = (i: number) => {
    const o = shoff + i * shentsize;
    const s = {
      name: elf.readUInt32LE(o),
      offset: Number(elf.readBigUInt64LE(o + 0x18)),
      size: Number(elf.readBigUInt64LE(o + 0x20)),
    };
    if (s.offset + s.size > elf.length) throw new Error(`ELF section ${i} lies past the end of the file`);
    return s;
  };
  const strtab = sect(shstrndx);
  for (let i = 0; i < shnum; i++) {
    const s = sect(i);
    const nameStart = strtab.offset + s.name;
    const name = elf.toString("latin1", nameStart, elf.indexOf(0, nameStart));
    if (name !== ".modinfo") continue;
    for (const kv of elf.toString("latin1", s.offset, s.offset + s.size).split("\0")) {
      if (kv.startsWith("depends="))
        return kv
          .slice("depends=".length)
          .split(",")
          .map((d) => d.trim())
          .filter(Boolean)
          .map(moduleName);
    }
    return [];
  }
  return [];
}

/** Decompresses a module file according to its suffix. */
export async function readModule(path: string): Promise<Buffer> {
  const raw = await readFile(path);
  if (path.endsWith(".ko")) return raw;
  if (path.endsWith(".ko.gz")) return gunzipSync(raw);
  if (path.endsWith(".ko.zst")) return Buffer.from(zstdDecompress(raw));
  if (path.endsWith(".ko.xz")) {
    try {
      const { stdout } = await execFileP("xz", ["-dc", path], { encoding: "buffer", maxBuffer: 256 << 20 });
      return stdout;
    } catch (err) {
      throw new RootfsError(
        "SM_MODULE_COMPRESSED",
        `${path} is xz-compressed and the xz tool is not available to decompress it: install xz (xz-utils) or provide uncompressed modules`,
        { cause: err, details: { module: moduleName(path) } },
      );
    }
  }
  throw new RootfsError("SM_MODULE_COMPRESSED", `${path}: unknown module compression`, {
    details: { module: moduleName(path) },
  });
}

/** Every module file below `dir` (relative paths). Symbolic links are not followed (build/, source/). */
async function walkKo(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await walkKo(dir, r)));
    else if (KO_RE.test(e.name)) out.push(r);
  }
  return out;
}

/** The modules dir's index: module name → relative path, and the dependency lists when modules.dep has them. */
async function indexModules(
  modulesDir: string,
): Promise<{ paths: Map<string, string>; deps?: Map<string, string[]>; builtin: Set<string> }> {
  if (!existsSync(modulesDir))
    throw new RootfsError("SM_MODULE_NOT_FOUND", `kernel modules directory ${modulesDir} does not exist`);
  const paths = new Map<string, string>();
  let deps: Map<string, string[]> | undefined;
  const depFile = join(modulesDir, "modules.dep");
  if (existsSync(depFile)) {
    deps = new Map();
    for (const line of (await readFile(depFile, "utf8")).split("\n")) {
      const colon = line.indexOf(":");
      if (colon < 0) continue;
      const path = line.slice(0, colon).trim();
      const name = moduleName(path);
      paths.set(name, path);
      deps.set(
        name,
        line
          .slice(colon + 1)
          .trim()
          .split(/\s+/)
          .filter(Boolean)
          .map(moduleName),
      );
    }
  } else {
    // A tree straight out of a kernel package has no modules.dep until depmod runs: index the files.
    for (const p of await walkKo(modulesDir)) paths.set(moduleName(p), p);
    if (paths.size === 0)
      throw new RootfsError(
        "SM_MODULE_NOT_FOUND",
        `${modulesDir} has neither modules.dep nor any .ko module file: is it a kernel modules directory (lib/modules/<release>)?`,
      );
  }
  const builtin = new Set<string>();
  const builtinFile = join(modulesDir, "modules.builtin");
  if (existsSync(builtinFile))
    for (const l of (await readFile(builtinFile, "utf8")).split("\n"))
      if (l.trim()) builtin.add(moduleName(l.trim()));
  return { paths, deps, builtin };
}

/**
 * Resolves the requested modules and all their dependencies: dependencies first, each module once. Names may
 * use dashes or underscores, and may be given as file names or paths ("virtio-rng", "virtio_rng.ko").
 * Dependencies come from modules.dep when present, else from each module's own .modinfo `depends=` (also in
 * .ko.gz / .ko.zst / .ko.xz files). Built-in modules (modules.builtin) are skipped.
 * Errors: SM_MODULE_NOT_FOUND (names the missing module and the chain that needed it; also a missing or empty
 * modulesDir), SM_MODULE_INVALID (a dependency cycle, shown; a module file that is not an ELF64 object),
 * SM_MODULE_COMPRESSED.
 */
export async function resolveModules(
  modulesDir: string,
  wanted: readonly string[],
): Promise<ResolvedModule[]> {
  const { paths, deps, builtin } = await indexModules(modulesDir);
  const depsOf = async (name: string, path: string): Promise<string[]> => {
    if (deps) return deps.get(name) ?? [];
    const file = join(modulesDir, path);
    const elf = await readModule(file);
    try {
      return modinfoDepends(elf);
    } catch (err) {
      throw new RootfsError(
        "SM_MODULE_INVALID",
        `cannot read the dependencies of kernel module ${file}: ${(err as Error).message}`,
        { cause: err, details: { module: name } },
      );
    }
  };
  const order: ResolvedModule[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = async (name: string, chain: string[]): Promise<void> => {
    if (state.get(name) === "done") return;
    if (state.get(name) === "visiting")
      throw new RootfsError(
        "SM_MODULE_INVALID",
        `kernel module dependency cycle in ${modulesDir}: ${[...chain, name].join(" -> ")}`,
        { details: { module: name } },
      );
    const path = paths.get(name);
    if (!path) {
      if (builtin.has(name)) {
        state.set(name, "done");
        return;
      }
      throw new RootfsError(
        "SM_MODULE_NOT_FOUND",
        `kernel module "${name}"${chain.length ? ` (needed by ${chain.join(" -> ")})` : ""} is not in ${modulesDir} and not built in`,
        { details: { module: name } },
      );
    }
    state.set(name, "visiting");
    for (const d of await depsOf(name, path)) await visit(d, [...chain, name]);
    state.set(name, "done");
    order.push({ name, path });
  };
  for (const w of wanted) await visit(moduleName(w), []);
  return order;
}

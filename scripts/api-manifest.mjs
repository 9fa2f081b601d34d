#!/usr/bin/env node
// Export manifests: for every entry point of every package (package.json `exports`, code entries only),
// packages/<pkg>/api/<entry>.api.md lists each exported name with its kind and its type as the checker
// sees it, plus the types the API refers to without exporting them (a change in those changes the
// API too). Generated from the TypeScript sources with the compiler API (needs node_modules).
//
//   node scripts/api-manifest.mjs            check: exit 1 and print a diff when a manifest is stale
//   node scripts/api-manifest.mjs --write    regenerate every manifest (and delete orphaned ones)
//   node scripts/api-manifest.mjs [--write] <pkg>...   only these packages (directory names)
//
// Each package's src/exports.test.ts runs the check for its package (checkPackage below).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
/** @type {import("typescript")} */
const ts = require("typescript");

export const UPDATE_COMMAND = "node scripts/api-manifest.mjs --write";

const NB = ts.NodeBuilderFlags;
// The checker builds a type node, then unions are sorted by their text and the node printed. NoTruncation:
// never "... 12 more ..."; no UseFullyQualifiedType (names stay short, so moving a type between files
// changes nothing). Sorting: the checker orders a union's members by creation order, which depends on
// what it happened to check first, so the same union can print differently from one program to another.
const NODE_FLAGS = NB.NoTruncation | NB.NoTypeReduction | NB.UseStructuralFallback | NB.IgnoreErrors;
const printer = ts.createPrinter({ removeComments: true, omitTrailingSemicolon: true });
const EMPTY_SF = ts.createSourceFile("manifest.ts", "", ts.ScriptTarget.Latest);

function printNode(node) {
  const sorted = ts.transform(node, [
    (ctx) => (root) => {
      const visit = (n) => {
        const v = ts.visitEachChild(n, visit, ctx);
        if (!ts.isUnionTypeNode(v)) return v;
        // by text, with null and undefined last (as people write them)
        const last = { null: "\uffffa", undefined: "\uffffb" };
        const keyed = v.types.map((t) => {
          const text = printer.printNode(ts.EmitHint.Unspecified, t, EMPTY_SF);
          return [last[text] ?? text, t];
        });
        keyed.sort((a, b) => cmp(a[0], b[0]));
        return ts.factory.updateUnionTypeNode(v, ts.factory.createNodeArray(keyed.map((k) => k[1])));
      };
      return ts.visitNode(root, visit);
    },
  ]).transformed[0];
  return printer.printNode(ts.EmitHint.Unspecified, sorted, EMPTY_SF).replace(/\s*\n\s*/g, " ");
}

const posix = (p) => p.split(sep).join("/");

/** Package directory names under packages/ that have a package.json with `exports`. */
export function packageNames() {
  return readdirSync(join(REPO, "packages"))
    .filter((d) => existsSync(join(REPO, "packages", d, "package.json")))
    .filter((d) => readPkg(d).exports)
    .sort();
}

function readPkg(dir) {
  return JSON.parse(readFileSync(join(REPO, "packages", dir, "package.json"), "utf8"));
}

/**
 * The code entry points of a package: `{ entry: ".", file: "src/index.ts", manifest: "api/index.api.md" }`.
 * The source of `./dist/<x>.d.ts` is `src/<x>.ts`; a package without a build (guest-*) names its
 * hand-written .d.ts, which is its source. JSON entries (./package.json, ./manifest.json) have no types.
 */
export function entryPoints(dir) {
  const pkg = readPkg(dir);
  const out = [];
  for (const [entry, target] of Object.entries(pkg.exports ?? {})) {
    const types = typesPath(target);
    if (!types) continue;
    const rel = types.replace(/^\.\//, "");
    const file = rel.startsWith("dist/") ? rel.replace(/^dist\//, "src/").replace(/\.d\.ts$/, ".ts") : rel;
    if (!existsSync(join(REPO, "packages", dir, file))) {
      throw new Error(`packages/${dir}: the source of export "${entry}" (${file}) does not exist`);
    }
    const name = entry === "." ? "index" : entry.replace(/^\.\//, "").replaceAll("/", "-");
    out.push({ entry, file, manifest: `api/${name}.api.md` });
  }
  return out.sort((a, b) => a.entry.localeCompare(b.entry));
}

/** The ESM `types` of an exports target ("./dist/index.d.ts"), or undefined for a non-code entry. */
function typesPath(target) {
  if (typeof target === "string") return /\.d\.(m|c)?ts$/.test(target) ? target : undefined;
  if (!target || typeof target !== "object") return undefined;
  if (typeof target.types === "string") return target.types;
  for (const key of ["import", "default", "require"]) {
    const t = typesPath(target[key]);
    if (t) return t;
  }
  return undefined;
}

function compilerOptions() {
  const base = ts.readConfigFile(join(REPO, "tsconfig.base.json"), ts.sys.readFile);
  if (base.error) throw new Error(ts.flattenDiagnosticMessageText(base.error.messageText, "\n"));
  const { options, errors } = ts.convertCompilerOptionsFromJson(base.config.compilerOptions, REPO);
  if (errors.length) throw new Error(ts.flattenDiagnosticMessageText(errors[0].messageText, "\n"));
  return {
    ...options,
    composite: false,
    incremental: false,
    declaration: false,
    emitDeclarationOnly: false,
    noEmit: true,
  };
}

/** Does this package's build strip `@internal` declarations (tsconfig.build.json `stripInternal`)? */
function stripsInternal(dir) {
  const path = join(REPO, "packages", dir, "tsconfig.build.json");
  if (!existsSync(path)) return false;
  const cfg = ts.readConfigFile(path, ts.sys.readFile).config ?? {};
  return cfg.compilerOptions?.stripInternal === true;
}

/**
 * Manifests of the given packages: Map "packages/<pkg>/api/<x>.api.md" → text. One program per package
 * (its entry points only), so the text never depends on which other packages were generated in the same
 * run: the checker names a type by the first alias it met, and that order must be the same in the
 * script and in each package's test.
 */
export function generate(dirs = packageNames()) {
  const out = new Map();
  const options = compilerOptions();
  // The repository root as the program's current directory, wherever this runs from (a package's own
  // test run has cwd packages/<pkg>, and TypeScript then resolved the same types to other files).
  const host = ts.createCompilerHost(options);
  host.getCurrentDirectory = () => REPO;
  for (const dir of dirs) {
    const jobs = entryPoints(dir);
    const program = ts.createProgram(
      jobs.map((j) => join(REPO, "packages", dir, j.file)),
      options,
      host,
    );
    const checker = program.getTypeChecker();
    for (const job of jobs) {
      const text = manifest(program, checker, { dir, ...job }, stripsInternal(dir));
      out.set(`packages/${dir}/${job.manifest}`, text);
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------ the printer

function manifest(program, checker, job, stripInternal) {
  const pkgName = readPkg(job.dir).name;
  const sf = program.getSourceFile(join(REPO, "packages", job.dir, job.file));
  if (!sf) throw new Error(`packages/${job.dir}/${job.file}: not in the program`);
  const diags = ts.getPreEmitDiagnostics(program, sf);
  if (diags.length) {
    const d = diags[0];
    throw new Error(
      `packages/${job.dir}/${job.file}: ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`,
    );
  }
  const moduleSymbol = checker.getSymbolAtLocation(sf);
  const exports = moduleSymbol ? checker.getExportsOfModule(moduleSymbol) : [];

  const exportedTargets = new Set();
  const entries = [];
  for (const sym of exports) {
    const target = sym.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(sym) : sym;
    exportedTargets.add(target);
    const typeOnly = (sym.declarations ?? []).some((d) => ts.isTypeOnlyImportOrExportDeclaration(d));
    entries.push({ name: sym.name, target, typeOnly });
  }
  entries.sort((a, b) => cmp(a.name, b.name));

  const p = new Printer(checker, exportedTargets, stripInternal);
  const blocks = entries.map((e) => p.symbol(e.name, e.target, e.typeOnly));
  // what the exported signatures name but the entry does not export, transitively
  const referenced = [];
  const printed = new Set();
  for (let next = p.pending(printed); next.length; next = p.pending(printed)) {
    for (const sym of next) {
      printed.add(sym);
      referenced.push({ name: sym.name, block: p.symbol(sym.name, sym, false) });
    }
  }
  referenced.sort((a, b) => cmp(a.name, b.name) || cmp(a.block, b.block));

  const runtime = entries
    .filter((e) => !e.typeOnly && e.target.flags & ts.SymbolFlags.Value)
    .map((e) => e.name);
  const lines = [
    `# ${pkgName}${job.entry === "." ? "" : job.entry.slice(1)}`,
    "",
    `Export \`"${job.entry}"\` of packages/${job.dir} (source: \`${job.file}\`). Generated by`,
    `\`${UPDATE_COMMAND}\`: do not edit by hand. The exports test fails when this file is stale.`,
    "",
    `${entries.length} exports; ${runtime.length} exist at runtime: ${runtime.join(", ") || "(none)"}.`,
    "",
    "## Exports",
    "",
    "```ts",
    blocks.join("\n\n"),
    "```",
  ];
  if (referenced.length) {
    lines.push(
      "",
      "## Referenced, not exported",
      "",
      "Declared in this repository, named by the API above, not exported by this entry.",
      "",
      "```ts",
      referenced.map((r) => r.block).join("\n\n"),
      "```",
    );
  }
  const text = `${lines.join("\n")}\n`;
  if (text.includes(REPO))
    throw new Error(`${job.dir}/${job.manifest}: an absolute path leaked into the manifest`);
  return text;
}

function cmp(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Is this declaration in the repository's own sources (not node_modules, not TypeScript's lib)? */
function inRepo(decl) {
  const file = decl.getSourceFile().fileName;
  return file.startsWith(`${posix(REPO)}/`) && !file.includes("/node_modules/");
}

function hasModifier(decl, flag) {
  return (ts.getCombinedModifierFlags(decl) & flag) !== 0;
}

function isInternal(decl) {
  return ts.getJSDocTags(decl).some((t) => t.tagName.text === "internal");
}

class Printer {
  constructor(checker, exported, stripInternal) {
    this.checker = checker;
    this.exported = exported;
    this.stripInternal = stripInternal;
    this.seenTypes = new Set();
    this.referenced = new Set();
  }

  /** Symbols named by printed types that are declared here and not exported, not yet printed. */
  pending(printed) {
    return [...this.referenced].filter((s) => !printed.has(s) && !this.exported.has(s));
  }

  hidden(decl) {
    if (!decl) return false;
    if (this.stripInternal && isInternal(decl)) return true;
    if (decl.name && ts.isPrivateIdentifier(decl.name)) return true;
    return hasModifier(decl, ts.ModifierFlags.Private);
  }

  type(t, flags = 0) {
    this.visit(t);
    const node = this.checker.typeToTypeNode(t, undefined, NODE_FLAGS | flags);
    if (!node) throw new Error(`no type node for ${this.checker.typeToString(t)}`);
    return printNode(node);
  }

  /** `<T>(a: A): R` */
  sig(s) {
    for (const tp of s.getTypeParameters() ?? []) this.visit(tp);
    for (const p of s.getParameters()) this.visit(this.checker.getTypeOfSymbol(p));
    this.visit(s.getReturnType());
    const node = this.checker.signatureToSignatureDeclaration(
      s,
      ts.SyntaxKind.CallSignature,
      undefined,
      NODE_FLAGS,
    );
    if (!node) throw new Error("no signature node");
    return printNode(node);
  }

  /** Note the repo-declared named types reachable from `t` (their bodies are printed separately). */
  visit(t) {
    if (!t || this.seenTypes.has(t)) return;
    this.seenTypes.add(t);
    const c = this.checker;
    if (t.aliasSymbol) {
      this.note(t.aliasSymbol);
      for (const a of t.aliasTypeArguments ?? []) this.visit(a);
      return;
    }
    if (t.isUnionOrIntersection()) {
      for (const u of t.types) this.visit(u);
      return;
    }
    if (t.flags & ts.TypeFlags.EnumLiteral && t.symbol) {
      this.note(t.symbol.parent ?? t.symbol);
      return;
    }
    if (t.flags & ts.TypeFlags.TypeParameter) {
      this.visit(t.getConstraint());
      return;
    }
    if (t.flags & ts.TypeFlags.Index) return this.visit(t.type);
    if (t.flags & ts.TypeFlags.IndexedAccess) {
      this.visit(t.objectType);
      this.visit(t.indexType);
      return;
    }
    if (t.flags & ts.TypeFlags.Conditional) {
      this.visit(t.checkType);
      this.visit(t.extendsType);
      return;
    }
    if (!(t.flags & ts.TypeFlags.Object)) return;
    if (t.objectFlags & ts.ObjectFlags.Reference) for (const a of c.getTypeArguments(t)) this.visit(a);
    const sym = t.getSymbol();
    if (sym && sym.flags & (ts.SymbolFlags.Class | ts.SymbolFlags.Interface | ts.SymbolFlags.Enum)) {
      this.note(sym);
      return;
    }
    // anonymous object / function type: its members are part of the printed text, but the names
    // inside them are not
    for (const p of c.getPropertiesOfType(t)) this.visit(c.getTypeOfSymbol(p));
    for (const kind of [ts.SignatureKind.Call, ts.SignatureKind.Construct]) {
      for (const s of c.getSignaturesOfType(t, kind)) {
        for (const p of s.getParameters()) this.visit(c.getTypeOfSymbol(p));
        this.visit(s.getReturnType());
      }
    }
    for (const info of c.getIndexInfosOfType(t)) this.visit(info.type);
  }

  note(sym) {
    if (sym.flags & ts.SymbolFlags.Alias) sym = this.checker.getAliasedSymbol(sym);
    if (sym.flags & ts.SymbolFlags.TypeParameter) return;
    if ((sym.declarations ?? []).some(inRepo)) this.referenced.add(sym);
  }

  /** Every declaration kind of one symbol (a name can be a const and a type), as text. */
  symbol(name, sym, typeOnly) {
    const c = this.checker;
    const F_ = ts.SymbolFlags;
    const parts = [];
    const decls = sym.declarations ?? [];
    const tag = typeOnly && sym.flags & F_.Value ? " // type-only export: no runtime value" : "";
    if (sym.flags & F_.Class) parts.push(this.classText(name, sym, tag));
    if (sym.flags & F_.Interface) parts.push(this.interfaceText(name, sym, tag));
    if (sym.flags & F_.TypeAlias) {
      const d = decls.find(ts.isTypeAliasDeclaration);
      const t = c.getDeclaredTypeOfSymbol(sym);
      parts.push(`type ${name}${typeParams(d)} = ${this.type(t, NB.InTypeAlias)};${tag}`);
    }
    if (sym.flags & F_.Enum) {
      const d = decls.find(ts.isEnumDeclaration);
      const members = (d?.members ?? []).map(
        (m) => `  ${m.name.getText()} = ${JSON.stringify(c.getConstantValue(m))},`,
      );
      parts.push(
        [
          `${hasModifier(d, ts.ModifierFlags.Const) ? "const " : ""}enum ${name} {${tag}`,
          ...members,
          "}",
        ].join("\n"),
      );
    }
    if (sym.flags & F_.Function) {
      const t = c.getTypeOfSymbol(sym);
      const sigs = c.getSignaturesOfType(t, ts.SignatureKind.Call);
      parts.push(sigs.map((s) => `function ${name}${this.sig(s)};${tag}`).join("\n"));
    }
    if (sym.flags & F_.Variable) {
      const d = decls.find(ts.isVariableDeclaration);
      const flags = d ? ts.getCombinedNodeFlags(d) : 0;
      const kw = flags & ts.NodeFlags.Const ? "const" : flags & ts.NodeFlags.Let ? "let" : "var";
      parts.push(`${kw} ${name}: ${this.type(c.getTypeOfSymbol(sym))};${tag}`);
    }
    if (sym.flags & (F_.ValueModule | F_.NamespaceModule)) {
      const members = c
        .getExportsOfModule(sym)
        .map((m) => [m.name, m.flags & F_.Alias ? c.getAliasedSymbol(m) : m])
        .sort((a, b) => cmp(a[0], b[0]))
        .map(([n, m]) => indent(this.symbol(n, m, false)));
      parts.push([`namespace ${name} {${tag}`, ...members, "}"].join("\n"));
    }
    if (!parts.length) parts.push(`/* ${name}: unsupported symbol kind ${sym.flags} */`);
    return parts.join("\n");
  }

  classText(name, sym, tag) {
    const c = this.checker;
    const d = (sym.declarations ?? []).find(ts.isClassLike);
    const abstract = d && hasModifier(d, ts.ModifierFlags.Abstract) ? "abstract " : "";
    const lines = [`${abstract}class ${name}${typeParams(d)}${heritage(d, c)} {${tag}`];
    const staticType = c.getTypeOfSymbol(sym);
    const ctorDecls = (d?.members ?? []).filter(ts.isConstructorDeclaration);
    const ctorVis = ctorDecls.some((m) => hasModifier(m, ts.ModifierFlags.Private))
      ? "private "
      : ctorDecls.some((m) => hasModifier(m, ts.ModifierFlags.Protected))
        ? "protected "
        : "";
    if (ctorVis === "private ") lines.push("  private constructor;");
    else {
      for (const s of c.getSignaturesOfType(staticType, ts.SignatureKind.Construct)) {
        const text = this.sig(s).replace(/: [^:]*$/, ""); // drop the return type (the instance)
        lines.push(`  ${ctorVis}constructor${text};`);
      }
    }
    const statics = c.getPropertiesOfType(staticType).filter((p) => p.name !== "prototype");
    lines.push(...this.members(statics, "static "));
    lines.push(...this.members(c.getPropertiesOfType(c.getDeclaredTypeOfSymbol(sym)), ""));
    for (const info of c.getIndexInfosOfType(c.getDeclaredTypeOfSymbol(sym)))
      lines.push(`  ${this.index(info)};`);
    lines.push("}");
    return lines.join("\n");
  }

  interfaceText(name, sym, tag) {
    const c = this.checker;
    const d = (sym.declarations ?? []).find(ts.isInterfaceDeclaration);
    const t = c.getDeclaredTypeOfSymbol(sym);
    const lines = [`interface ${name}${typeParams(d)}${heritage(d, c)} {${tag}`];
    for (const s of c.getSignaturesOfType(t, ts.SignatureKind.Call)) lines.push(`  ${this.sig(s)};`);
    for (const s of c.getSignaturesOfType(t, ts.SignatureKind.Construct)) lines.push(`  new ${this.sig(s)};`);
    for (const info of c.getIndexInfosOfType(t)) lines.push(`  ${this.index(info)};`);
    lines.push(...this.members(c.getPropertiesOfType(t), ""));
    lines.push("}");
    return lines.join("\n");
  }

  index(info) {
    const ro = info.isReadonly ? "readonly " : "";
    return `${ro}[key: ${this.type(info.keyType)}]: ${this.type(info.type)}`;
  }

  /**
   * Members sorted by name, one line per property or method overload. Inherited members declared outside
   * the repository (EventEmitter's, Error's) are left out: the heritage clause names them.
   */
  members(props, prefix) {
    const c = this.checker;
    const out = [];
    const sorted = [...props].sort((a, b) => cmp(a.name, b.name));
    for (const p of sorted) {
      const decls = p.declarations ?? [];
      if (decls.length && !decls.some(inRepo)) continue;
      if (decls.length && decls.every((d) => this.hidden(d))) continue;
      const d = decls[0];
      const prot = d && hasModifier(d, ts.ModifierFlags.Protected) ? "protected " : "";
      const opt = p.flags & ts.SymbolFlags.Optional ? "?" : "";
      const key = memberName(p, d);
      const t = c.getTypeOfSymbol(p);
      if (p.flags & ts.SymbolFlags.Method) {
        for (const s of c.getSignaturesOfType(t, ts.SignatureKind.Call)) {
          out.push(`  ${prefix}${prot}${key}${opt}${this.sig(s)};`);
        }
        continue;
      }
      let ro = "";
      if (p.flags & ts.SymbolFlags.GetAccessor && !(p.flags & ts.SymbolFlags.SetAccessor)) ro = "get ";
      else if (decls.some((x) => hasModifier(x, ts.ModifierFlags.Readonly))) ro = "readonly ";
      out.push(`  ${prefix}${prot}${ro}${key}${opt}: ${this.type(t)};`);
    }
    return out;
  }
}

function memberName(p, d) {
  if (d?.name && ts.isComputedPropertyName(d.name)) return d.name.getText();
  return /^[A-Za-z_$][\w$]*$/.test(p.name) ? p.name : JSON.stringify(p.name);
}

function typeParams(d) {
  if (!d?.typeParameters?.length) return "";
  return `<${d.typeParameters.map((tp) => tp.getText().replace(/\s+/g, " ")).join(", ")}>`;
}

function heritage(d, checker) {
  if (!d?.heritageClauses) return "";
  return d.heritageClauses
    .map((h) => {
      const kw = h.token === ts.SyntaxKind.ExtendsKeyword ? "extends" : "implements";
      const types = h.types.map((t) =>
        printNode(checker.typeToTypeNode(checker.getTypeAtLocation(t), undefined, NODE_FLAGS)),
      );
      return ` ${kw} ${types.join(", ")}`;
    })
    .join("");
}

function indent(text) {
  return text
    .split("\n")
    .map((l) => `  ${l}`)
    .join("\n");
}

// ------------------------------------------------------------------------------------------ check, diff

/** Unified-style line diff of two texts (committed → generated); "" when equal. */
export function diffLines(a, b, labelA = "committed", labelB = "generated") {
  if (a === b) return "";
  const x = a.split("\n");
  const y = b.split("\n");
  // LCS table (manifests are a few hundred lines)
  const n = x.length;
  const m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const ops = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) {
      ops.push([" ", x[i], i, j]);
      i++;
      j++;
    } else if (i < n && (j >= m || lcs[i + 1][j] >= lcs[i][j + 1])) {
      ops.push(["-", x[i], i, j]);
      i++;
    } else {
      ops.push(["+", y[j], i, j]);
      j++;
    }
  }
  // hunks with 3 lines of context
  const out = [`--- ${labelA}`, `+++ ${labelB}`];
  const changed = ops.map((o, k) => (o[0] !== " " ? k : -1)).filter((k) => k >= 0);
  let k = 0;
  while (k < changed.length) {
    const start = Math.max(0, changed[k] - 3);
    let end = changed[k];
    while (k < changed.length && changed[k] <= end + 7) end = changed[k++];
    end = Math.min(ops.length - 1, end + 3);
    const slice = ops.slice(start, end + 1);
    const aStart = slice[0][2] + 1;
    const bStart = slice[0][3] + 1;
    const aLen = slice.filter((o) => o[0] !== "+").length;
    const bLen = slice.filter((o) => o[0] !== "-").length;
    out.push(`@@ -${aStart},${aLen} +${bStart},${bLen} @@`);
    for (const o of slice) out.push(`${o[0]}${o[1]}`);
  }
  return out.join("\n");
}

function manifestFiles(dir) {
  const api = join(REPO, "packages", dir, "api");
  if (!existsSync(api)) return [];
  return readdirSync(api)
    .filter((f) => f.endsWith(".api.md"))
    .map((f) => `packages/${dir}/api/${f}`);
}

/**
 * Compare the generated manifests of these packages with the committed ones. Returns the problems as
 * text ("" when every manifest is current): a diff per stale manifest, missing and orphaned files.
 */
export function check(dirs = packageNames()) {
  const generated = generate(dirs);
  const problems = [];
  for (const [path, text] of generated) {
    const abs = join(REPO, path);
    if (!existsSync(abs)) {
      problems.push(`${path}: missing`);
      continue;
    }
    const d = diffLines(readFileSync(abs, "utf8"), text, `${path} (committed)`, `${path} (from the sources)`);
    if (d) problems.push(d);
  }
  for (const dir of dirs) {
    for (const path of manifestFiles(dir)) {
      if (!generated.has(path)) problems.push(`${path}: no entry point has this manifest (orphaned)`);
    }
  }
  if (!problems.length) return "";
  return `${problems.join("\n\n")}\n\nThe public API differs from the committed manifest. If the change is intended, run:\n  ${UPDATE_COMMAND}\nand commit packages/*/api/.`;
}

/** For a package's exports test: the problems of its manifests ("" when current). */
export function checkPackage(dir) {
  return check([dir]);
}

/** Names the manifest of one entry says exist at runtime (for the exports tests). */
export function runtimeNames(dir, entry = ".") {
  const e = entryPoints(dir).find((x) => x.entry === entry);
  if (!e) throw new Error(`packages/${dir} has no entry point "${entry}"`);
  const text = readFileSync(join(REPO, "packages", dir, e.manifest), "utf8");
  const m = /^\d+ exports; \d+ exist at runtime: (.*)\.$/m.exec(text);
  if (!m) throw new Error(`packages/${dir}/${e.manifest}: no runtime line`);
  return m[1] === "(none)" ? [] : m[1].split(", ");
}

export function write(dirs = packageNames()) {
  const generated = generate(dirs);
  const changed = [];
  for (const [path, text] of generated) {
    const abs = join(REPO, path);
    if (existsSync(abs) && readFileSync(abs, "utf8") === text) continue;
    mkdirSync(dirname(abs), { recursive: true });
    writeFileSync(abs, text);
    changed.push(`wrote ${path}`);
  }
  for (const dir of dirs) {
    for (const path of manifestFiles(dir)) {
      if (generated.has(path)) continue;
      rmSync(join(REPO, path));
      changed.push(`removed ${path} (orphaned)`);
    }
  }
  return changed;
}

function main(argv) {
  const writeMode = argv.includes("--write");
  const unknown = argv.filter((a) => a.startsWith("-") && a !== "--write");
  if (unknown.length) {
    console.error(
      `api-manifest: unknown option ${unknown[0]}\nusage: node scripts/api-manifest.mjs [--write] [pkg...]`,
    );
    return 2;
  }
  const all = packageNames();
  const dirs = argv.filter((a) => !a.startsWith("-"));
  for (const d of dirs) {
    if (!all.includes(d)) {
      console.error(`api-manifest: no package "${d}" (known: ${all.join(", ")})`);
      return 2;
    }
  }
  const selected = dirs.length ? dirs : all;
  if (writeMode) {
    const changed = write(selected);
    console.log(changed.length ? changed.join("\n") : "api-manifest: every manifest is current");
    return 0;
  }
  const problems = check(selected);
  if (problems) {
    console.error(problems);
    return 1;
  }
  const count = selected.reduce((n, d) => n + entryPoints(d).length, 0);
  console.log(
    `api-manifest: ${count} manifests current (${posix(relative(REPO, join(REPO, "packages")))}/*/api)`,
  );
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}

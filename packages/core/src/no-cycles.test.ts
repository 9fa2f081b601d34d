/**
 * No import cycles inside a package's src/. The graph has one edge per relative module specifier that
 * stays in the emitted JavaScript: `import … from` and `import "…"` (with verbatimModuleSyntax an
 * `import { type A }` stays too, as `import {} from`), `export … from`, and `import("…")` calls. A cycle
 * there means a module can run against a half-initialised one. `import type`, `export type … from`
 * and `import("…").T` in types are erased: they are collected but not edges, because the public
 * classes name each other in their signatures (Image.pool() → Pool, pool.acquire() → Vm,
 * vm.snapshot() → Image) and that can only be written as type references between their files.
 * Every package of the repository is checked, not only core.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const PACKAGES = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (/\.(ts|tsx|mts|cts)$/.test(name) && !name.endsWith(".d.ts")) out.push(p);
  }
  return out;
}

interface Specifier {
  spec: string;
  /** Erased at compile time: `import type`, `export type … from`, an `import("…")` type. */
  typeOnly: boolean;
}

/** Every module specifier of one file (static, re-export, dynamic, import type). */
export function specifiers(file: string, text: string): Specifier[] {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, false);
  const found: Specifier[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      found.push({ spec: node.moduleSpecifier.text, typeOnly: node.importClause?.isTypeOnly === true });
    } else if (
      ts.isExportDeclaration(node) &&
      node.moduleSpecifier &&
      ts.isStringLiteral(node.moduleSpecifier)
    ) {
      found.push({ spec: node.moduleSpecifier.text, typeOnly: node.isTypeOnly });
    } else if (
      ts.isCallExpression(node) &&
      node.expression.kind === ts.SyntaxKind.ImportKeyword &&
      node.arguments[0] &&
      ts.isStringLiteralLike(node.arguments[0])
    ) {
      found.push({ spec: node.arguments[0].text, typeOnly: false });
    } else if (
      ts.isImportTypeNode(node) &&
      ts.isLiteralTypeNode(node.argument) &&
      ts.isStringLiteral(node.argument.literal)
    ) {
      found.push({ spec: node.argument.literal.text, typeOnly: true });
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return found;
}

/** The file a relative specifier names (`./x`, `./x.js`, `./dir` → dir/index.ts), or undefined. */
function resolveRelative(from: string, spec: string): string | undefined {
  if (!spec.startsWith(".")) return undefined;
  const base = resolve(dirname(from), spec);
  const stem = base.replace(/\.(c|m)?js$/, "");
  for (const c of [base, `${stem}.ts`, `${stem}.tsx`, `${stem}.mts`, `${stem}.cts`, join(base, "index.ts")]) {
    if (existsSync(c) && statSync(c).isFile()) return c;
  }
  return undefined;
}

/** Runtime import graph of every source file under srcDir; edges that leave srcDir are dropped. */
export function importGraph(srcDir: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const f of sourceFiles(srcDir)) {
    const targets = specifiers(f, readFileSync(f, "utf8"))
      .filter((s) => !s.typeOnly)
      .map((s) => resolveRelative(f, s.spec))
      .filter((t): t is string => t !== undefined && !relative(srcDir, t).startsWith(".."));
    graph.set(f, [...new Set(targets)]);
  }
  return graph;
}

/**
 * Every cycle as a path `a → b → … → a`: one per strongly connected component (Tarjan), each the
 * shortest loop through the component's first file found by breadth-first search.
 */
export function findCycles(graph: Map<string, string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const strong = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
      }
    }
    if (low.get(v) === index.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop() as string;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) components.push(comp);
    }
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) strong(v);

  return components.map((comp) => {
    const members = new Set(comp);
    const start = [...comp].sort()[0] as string;
    const prev = new Map<string, string>();
    const queue = [start];
    let last: string | undefined;
    while (queue.length > 0 && last === undefined) {
      const v = queue.shift() as string;
      for (const w of graph.get(v) ?? []) {
        if (!members.has(w)) continue;
        if (w === start) {
          last = v;
          break;
        }
        if (!prev.has(w)) {
          prev.set(w, v);
          queue.push(w);
        }
      }
    }
    const path = [start];
    for (let v = last; v !== undefined && v !== start; v = prev.get(v)) path.splice(1, 0, v);
    return [...path, start];
  });
}

describe("import graph", () => {
  it("finds a cycle and names it", () => {
    const g = new Map([
      ["a", ["b"]],
      ["b", ["c"]],
      ["c", ["a", "d"]],
      ["d", []],
      ["e", ["e"]],
    ]);
    expect(findCycles(g)).toEqual([
      ["a", "b", "c", "a"],
      ["e", "e"],
    ]);
    expect(
      findCycles(
        new Map([
          ["a", ["b"]],
          ["b", []],
        ]),
      ),
    ).toEqual([]);
  });

  it("sees static, re-export, dynamic and type imports", () => {
    const text = `import { a } from "./a";
import type { B } from "./b";
export { c } from "./c";
export * from "./d";
import "./e";
const f = await import("./f");
let g: import("./g").G;
import { type H } from "./h";
export type { I } from "./i";
// import { x } from "./comment";
const s = "import { y } from './string'";`;
    expect(specifiers("x.ts", text)).toEqual([
      { spec: "./a", typeOnly: false },
      { spec: "./b", typeOnly: true },
      { spec: "./c", typeOnly: false },
      { spec: "./d", typeOnly: false },
      { spec: "./e", typeOnly: false },
      { spec: "./f", typeOnly: false },
      { spec: "./g", typeOnly: true },
      { spec: "./h", typeOnly: false },
      { spec: "./i", typeOnly: true },
    ]);
  });

  const packages = readdirSync(PACKAGES).filter((p) => existsSync(join(PACKAGES, p, "src")));
  it.each(packages)("packages/%s/src has no import cycle", (pkg) => {
    const src = join(PACKAGES, pkg, "src");
    const cycles = findCycles(importGraph(src)).map((c) => c.map((f) => relative(src, f)).join(" → "));
    expect(cycles, `import cycles in packages/${pkg}/src`).toEqual([]);
  });
});

/**
 * `docs/architecture.md` is what the code's comments cite: every citation
 * names a section that exists, and the import rules of its §1 hold.
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";

const ROOT = join(__dirname, "..", "..", "..");
const DOC = readFileSync(join(ROOT, "docs", "architecture.md"), "utf8");
const SKIP = new Set(["node_modules", ".git", ".hafleet", "cdk.out", "coverage"]);

function files(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
    if (SKIP.has(e.name)) continue;
    const rel = dir ? `${dir}/${e.name}` : e.name;
    if (e.isDirectory()) files(rel, out);
    else if (/\.(ts|js|md|py|sh|json)$/.test(e.name) && rel !== "package-lock.json") out.push(rel);
  }
  return out;
}
const ALL = files("");

/** The section numbers the page defines: `## §3 ...`, `### §5.1 ...`. */
const SECTIONS = new Set([...DOC.matchAll(/^#{2,4} §(\d+(?:\.\d+)*) /gm)].map((m) => m[1]));

/** The room of a path, as §1 names them. */
function room(path: string): string {
  const [top, second] = path.split("/");
  return top === "lib" ? `lib/${second}` : top!;
}

/** Which rooms each room may import from (besides itself and npm packages). */
const MAY_IMPORT: Record<string, readonly string[]> = {
  "lib/core": [],
  "lib/infra": ["lib/core"],
  proxy: ["lib/core"],
  lambdas: ["lib/core"],
  bin: ["lib/core", "lib/infra", "proxy", "lambdas"],
  bench: ["lib/core", "lib/infra", "proxy", "lambdas", "bin"],
  scripts: ["lib/core", "lib/infra", "proxy", "lambdas", "bin"],
};

/**
 * §1's known exception: local mode and the tools the benches share still live in
 * `test/harness/`. Listed by name so that nothing else from `test/` creeps in.
 */
const LOCAL_MODE_IN_HARNESS = new Set([
  "test/harness/aws",
  "test/harness/emulator",
  "test/harness/fault-proxy",
  "test/harness/lease-contenders",
  "test/harness/local-fleet",
  "test/harness/tour",
  "test/harness/traffic",
]);

describe("docs/architecture.md", () => {
  it("defines numbered sections", () => {
    expect(SECTIONS.size).toBeGreaterThanOrEqual(10);
  });

  it("every citation of it names a section that exists", () => {
    const bad: string[] = [];
    let cited = 0;
    for (const f of ALL) {
      const text = readFileSync(join(ROOT, f), "utf8");
      for (const m of text.matchAll(/architecture\.md,? §(\d+(?:\.\d+)*)/g)) {
        cited++;
        if (!SECTIONS.has(m[1]!)) bad.push(`${f}: §${m[1]}`);
      }
    }
    expect(bad).toEqual([]);
    expect(cited).toBeGreaterThan(0);
  });

  it("the project cites only its own documents", () => {
    const founding = ["DESIGN", "CONVENTIONS"].map((n) => `${n}.md`);
    const bad = ALL.filter((f) => founding.some((n) => readFileSync(join(ROOT, f), "utf8").includes(n)));
    expect(bad).toEqual([]);
  });

  it("imports follow the rooms of §1", () => {
    const bad: string[] = [];
    for (const f of ALL) {
      if (!f.endsWith(".ts") || f.startsWith("test/")) continue;
      const from = room(f);
      const allowed = MAY_IMPORT[from];
      if (!allowed) continue;
      const text = readFileSync(join(ROOT, f), "utf8");
      for (const m of text.matchAll(/(?:from|import|require\()\s*["'](\.\.?\/[^"']+)["']/g)) {
        const target = relative(ROOT, normalize(join(ROOT, dirname(f), m[1]!))).replace(/\.ts$/, "");
        const to = room(target);
        if (to === from || allowed.includes(to) || target === "package.json") continue;
        if (LOCAL_MODE_IN_HARNESS.has(target) && ["bin", "bench", "scripts"].includes(from)) continue;
        bad.push(`${f} imports ${target}`);
      }
    }
    expect(bad).toEqual([]);
  });
});

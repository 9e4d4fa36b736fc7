/**
 * Bundles a TypeScript entry into one CommonJS file under `.hafleet/build`
 * with esbuild, so child processes (nodes, lease contenders) start in a
 * fraction of a second, as the deployed bundle does, instead of compiling
 * TypeScript at every start. Bundles once per process and entry.
 */
import { join, relative } from "node:path";
import { build } from "esbuild";
import { REPO_ROOT, WORK_DIR } from "./emulator";

const built = new Map<string, Promise<string>>();

export function bundle(entry: string): Promise<string> {
  const abs = join(REPO_ROOT, entry);
  let out = built.get(abs);
  if (!out) {
    const outfile = join(
      WORK_DIR,
      "build",
      `${relative(REPO_ROOT, abs).replace(/[/\\]/g, "_").replace(/\.ts$/, "")}-${process.pid}.js`,
    );
    out = build({
      entryPoints: [abs],
      outfile,
      bundle: true,
      platform: "node",
      target: "node20",
      format: "cjs",
      sourcemap: "inline",
      logLevel: "error",
      // esbuild runs its own binary: entries that reach it (the CLI, through the local fleet) load it from node_modules.
      external: ["esbuild"],
    }).then(() => outfile);
    built.set(abs, out);
  }
  return out;
}

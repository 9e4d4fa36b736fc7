/**
 * Bundles a TypeScript entry into one CommonJS file under `.hafleet/build`
 * with esbuild, so child processes (nodes, lease contenders) start in a
 * fraction of a second, as the deployed bundle does, instead of compiling
 * TypeScript at every start. Bundles once per process and entry.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { build } from "esbuild";
import { REPO_ROOT, WORK_DIR } from "./emulator";

const built = new Map<string, Promise<string>>();

/**
 * The bundle is named by a hash of its content, written atomically (so several
 * processes share one file), and older bundles of the same entry are removed:
 * each carries an inline source map of several megabytes.
 */
export function bundle(entry: string): Promise<string> {
  const abs = join(REPO_ROOT, entry);
  let out = built.get(abs);
  if (!out) {
    const dir = join(WORK_DIR, "build");
    const name = relative(REPO_ROOT, abs).replace(/[/\\]/g, "_").replace(/\.ts$/, "");
    out = (async () => {
      const result = await build({
        entryPoints: [abs],
        outfile: join(dir, `${name}.js`),
        write: false,
        bundle: true,
        platform: "node",
        target: "node20",
        format: "cjs",
        sourcemap: "inline",
        logLevel: "error",
        // esbuild runs its own binary: entries that reach it (the CLI, through the local fleet) load it from node_modules.
        external: ["esbuild"],
      });
      const contents = result.outputFiles[0]!.contents;
      const file = join(
        dir,
        `${name}-${createHash("sha256").update(contents).digest("hex").slice(0, 16)}.js`,
      );
      await mkdir(dir, { recursive: true });
      if (!existsSync(file)) {
        const tmp = `${file}.${process.pid}.tmp`;
        await writeFile(tmp, contents);
        await rename(tmp, file);
      }
      for (const other of await readdir(dir)) {
        if (other.startsWith(`${name}-`) && join(dir, other) !== file)
          await rm(join(dir, other), { force: true });
      }
      return file;
    })();
    built.set(abs, out);
  }
  return out;
}

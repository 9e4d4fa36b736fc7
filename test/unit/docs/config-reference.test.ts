/**
 * The config reference (`docs/config.md`) and the examples (`examples/`)
 * say what validation does: the page is generated from the schema and must
 * match it, and every example is a valid config that explains itself.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadFleetConfigFile } from "../../../lib/core/config";
import { CONFIG_REFERENCE_PATH, renderConfigReference } from "../../../scripts/config-reference";

const ROOT = resolve(__dirname, "..", "..", "..");
const EXAMPLES = join(ROOT, "examples");

test("docs/config.md is what the schema says (npm run docs:config writes it)", () => {
  expect(readFileSync(CONFIG_REFERENCE_PATH, "utf8")).toBe(renderConfigReference());
});

test("every field of the reference says what it does", () => {
  const rows = renderConfigReference()
    .split("\n")
    .filter((l) => l.startsWith("| `"));
  expect(rows.length).toBeGreaterThan(60);
  const silent = rows.filter((l) => l.trimEnd().endsWith("|  |")).map((l) => l.split("|")[1]!.trim());
  expect(silent).toEqual([]);
});

const examples = readdirSync(EXAMPLES).filter((f) => /\.(ya?ml|json)$/.test(f));

test("there are examples of each kind the README names", () => {
  expect(examples.sort()).toEqual(["active-active-dns.yaml", "tcp-service.yaml", "web-sticky.yaml"]);
});

test.each(examples)("examples/%s is a valid config with comments", async (file) => {
  const path = join(EXAMPLES, file);
  await expect(loadFleetConfigFile(path)).resolves.toBeDefined();
  const comments = readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.includes("#"));
  expect(comments.length).toBeGreaterThanOrEqual(5);
});

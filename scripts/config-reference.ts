/**
 * The fleet config reference, `docs/config.md`, generated from the schema in
 * `lib/core/config.ts` (its bounds, defaults and `.describe()` texts), so the
 * page cannot say other than what validation does.
 *
 * `npm run docs:config` writes the page; `npm run docs:config -- --check`
 * exits 1 when the page on disk differs (a unit test does the same).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { z } from "zod";
import { FleetConfigSchema, NAME_PATTERN, NAME_RULE } from "../lib/core/config";

export const CONFIG_REFERENCE_PATH = resolve(__dirname, "..", "docs", "config.md");

/** The part of JSON Schema that zod's `toJSONSchema` writes for this schema. */
interface Node {
  readonly type?: string;
  readonly description?: string;
  readonly default?: unknown;
  readonly enum?: readonly unknown[];
  readonly minimum?: number;
  readonly maximum?: number;
  readonly minLength?: number;
  readonly maxLength?: number;
  readonly minItems?: number;
  readonly maxItems?: number;
  readonly pattern?: string;
  readonly items?: Node;
  readonly prefixItems?: readonly Node[];
  readonly properties?: Readonly<Record<string, Node>>;
  readonly required?: readonly string[];
  readonly additionalProperties?: Node | boolean;
  readonly propertyNames?: Node;
}

interface Row {
  readonly field: string;
  readonly type: string;
  readonly default: string;
  readonly meaning: string;
}

const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");
function code(v: unknown): string {
  const text = typeof v === "string" ? v : JSON.stringify(v);
  return text.includes("`") ? `\`\` ${text} \`\`` : `\`${text}\``;
}

/** A pattern as people read it: the rule of names in words, else the expression. */
function patternText(pattern: string): string {
  if (pattern === NAME_PATTERN.source) return `a name: ${NAME_RULE.replace(/^must be /, "")}`;
  if (pattern === "^\\/.*") return "starting with `/`";
  return `matching ${code(pattern)}`;
}

function range(lo: number | undefined, hi: number | undefined, unit = ""): string {
  if (lo !== undefined && hi !== undefined)
    return `${lo.toLocaleString("en-US")} to ${hi.toLocaleString("en-US")}${unit}`;
  if (lo !== undefined) return `at least ${lo.toLocaleString("en-US")}${unit}`;
  if (hi !== undefined) return `at most ${hi.toLocaleString("en-US")}${unit}`;
  return "";
}

function isObject(n: Node): boolean {
  return n.type === "object" && n.properties !== undefined;
}

function isMap(n: Node): n is Node & { additionalProperties: Node } {
  return n.type === "object" && typeof n.additionalProperties === "object";
}

function typeOf(n: Node): string {
  if (n.enum) return `one of ${n.enum.map(code).join(", ")}`;
  if (n.prefixItems) return `[${n.prefixItems.map(typeOf).join(", ")}]`;
  const within = (r: string) => (r ? ` (${r})` : "");
  switch (n.type) {
    case "integer":
    case "number":
      return `${n.type}${within(range(n.minimum, n.maximum))}`;
    case "string": {
      const parts = [range(n.minLength, n.maxLength, " characters"), n.pattern ? patternText(n.pattern) : ""];
      return `string${within(parts.filter(Boolean).join(", "))}`;
    }
    case "boolean":
      return "boolean";
    case "array":
      return `list${within(range(n.minItems, n.maxItems, " items"))} of ${n.items ? typeOf(n.items) : "anything"}`;
    case "object":
      if (isMap(n)) return `map of name to ${typeOf(n.additionalProperties)}`;
      return "object";
    default:
      return "anything";
  }
}

function rows(n: Node, path: string, out: Row[]): void {
  const required = new Set(n.required ?? []);
  for (const [key, child] of Object.entries(n.properties ?? {})) {
    const field = path ? `${path}.${key}` : key;
    const dflt =
      child.default !== undefined
        ? code(child.default)
        : required.has(key)
          ? "required"
          : isObject(child) || isMap(child)
            ? ""
            : "not set";
    out.push({ field, type: typeOf(child), default: dflt, meaning: child.description ?? "" });
    if (isObject(child)) rows(child, field, out);
    else if (child.type === "array" && child.items && isObject(child.items))
      rows(child.items, `${field}[]`, out);
    else if (isMap(child) && isObject(child.additionalProperties)) {
      rows(child.additionalProperties, `${field}.<name>`, out);
    }
  }
}

/** The whole page. */
export function renderConfigReference(): string {
  const root = z.toJSONSchema(FleetConfigSchema, { io: "input", unrepresentable: "any" }) as Node;
  const lines = [
    "# Fleet config reference",
    "",
    "<!-- Generated from lib/core/config.ts by `npm run docs:config`; a test fails when this page drifts. -->",
    "",
    "Every field of the fleet config document (YAML or JSON), its type and",
    "bounds, its default, and what it does. Every object is strict: a key not",
    "listed here is an error. Validate a file offline with",
    "`npx hafleet config validate FILE`; commented examples are in `examples/`.",
    "",
    "A default is what the field is when left out; `not set` means it is off",
    "unless given. Durations are in the unit their name ends with (`Ms`,",
    "`S`). `<name>` stands for a key of your choice (a pool's name, a node's id).",
  ];
  for (const [key, section] of Object.entries(root.properties ?? {})) {
    const out: Row[] = [];
    const top: Row = {
      field: key,
      type: typeOf(section),
      default: (root.required ?? []).includes(key) ? "required" : "",
      meaning: section.description ?? "",
    };
    out.push(top);
    if (isObject(section)) rows(section, key, out);
    else if (section.type === "array" && section.items && isObject(section.items))
      rows(section.items, `${key}[]`, out);
    else if (isMap(section) && isObject(section.additionalProperties)) {
      rows(section.additionalProperties, `${key}.<name>`, out);
    }
    lines.push("", `## ${key}`, "", section.description ?? "", "");
    lines.push("| field | type | default | meaning |", "|---|---|---|---|");
    for (const r of out) {
      lines.push(`| \`${r.field}\` | ${cell(r.type)} | ${cell(r.default)} | ${cell(r.meaning)} |`);
    }
  }
  return `${lines.join("\n")}\n`;
}

function main(argv: readonly string[]): void {
  const page = renderConfigReference();
  if (argv.includes("--check")) {
    let onDisk = "";
    try {
      onDisk = readFileSync(CONFIG_REFERENCE_PATH, "utf8");
    } catch {}
    if (onDisk !== page) {
      process.stderr.write(`${CONFIG_REFERENCE_PATH} is out of date: run npm run docs:config\n`);
      process.exitCode = 1;
    }
    return;
  }
  writeFileSync(CONFIG_REFERENCE_PATH, page);
  process.stdout.write(`wrote ${CONFIG_REFERENCE_PATH}\n`);
}

if (require.main === module) main(process.argv.slice(2));

/**
 * Turns CDK context into a `HafleetStack` (the logic behind `bin/app.ts`).
 *
 * Context keys (`cdk synth -c key=value`, or `context` in cdk.json):
 * - `mode`: `active-passive` (default) or `active-active`; sets the config's `failover.mode`.
 * - `config`: path of a fleet config file (YAML or JSON), validated by `parseFleetConfig`;
 *   or `fleet`: the config document itself (a JSON string, or an object in cdk.json).
 *   Without either, a one-listener preset config is used (replace it before going live).
 * - `fleetId` (default `main`), `nodeCount`, `instanceType` (e.g. `t3.small`), `machineImageId`
 *   (an AMI id instead of the latest Amazon Linux 2023), `listenerCidrs` (comma-separated),
 *   `healthCheckPrefixListId` (Route 53's health checkers, when `listenerCidrs` narrows the
 *   listeners; looked up by name by default), `adminPort`, `maxAzs`, `natGateways`,
 *   `notificationEmails` (comma-separated), `checkerConcurrency` (reserved for the checker, 0-10),
 *   `accessLog` (`true`: a log line per request on the nodes),
 *   `removalPolicy` (`retain` or `destroy`), `proxyEntry`, `checkerEntry`.
 * - DNS: `zoneName`, and the zone: `hostedZoneId`, or `createZone=true` for a new one, or neither
 *   to look it up by name in the account; `recordName`, `secondaryAddresses`, `failoverRecordName`.
 * - `account` and `region`: the stack's environment; by default the ones the CDK CLI found in
 *   your credentials (`CDK_DEFAULT_ACCOUNT`, `CDK_DEFAULT_REGION`). With an environment the CLI
 *   looks up the real zones and pins the nodes' image in cdk.context.json; without one (no
 *   credentials, as in the tests) the stack is environment-agnostic and synthesizes offline.
 *
 * A bad value fails synthesis with an error that names the context key or the config field.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { Annotations, type App, RemovalPolicy, Validations } from "aws-cdk-lib";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import { AwsSolutionsChecks } from "cdk-nag";
import { type FleetConfigInput, parseConfigText, parseFleetConfig } from "../core/config";
import { HafleetStack, type HafleetStackProps } from "./hafleet-stack";

export const MODES = ["active-passive", "active-active"] as const;
export type Mode = (typeof MODES)[number];

/** The config of the presets when none is given: one HTTP listener on port 80 in front of one pool. */
export const PRESET_CONFIG: FleetConfigInput = {
  listeners: [{ name: "http", protocol: "http", port: 80, pool: "web" }],
  pools: { web: { backends: [{ host: "10.0.100.10", port: 8080 }] } },
};

/** What `cdk synth` says when no config was given. */
export const PRESET_NOTICE = (() => {
  const l = PRESET_CONFIG.listeners[0]!;
  const b = PRESET_CONFIG.pools[l.pool]!.backends[0]!;
  return (
    `no fleet config given (-c config=FILE or -c fleet=JSON): using the preset, one ${l.protocol.toUpperCase()} ` +
    `listener on port ${l.port} in front of the sample backend ${b.host}:${b.port}; give your own before going live`
  );
})();

type Context = { tryGetContext(key: string): unknown };

/** Reads the context and returns the stack's id and props; throws on any bad value, naming it. */
export function stackPropsFromContext(
  ctx: Context,
  cwd = process.cwd(),
  env: NodeJS.ProcessEnv = process.env,
): { id: string; props: HafleetStackProps; presetConfig: boolean } {
  const str = (key: string): string | undefined => {
    const v = ctx.tryGetContext(key);
    if (v === undefined || v === null || v === "") return undefined;
    if (typeof v !== "string" && typeof v !== "number") {
      throw new Error(`context \`${key}\` must be a string (got ${JSON.stringify(v)})`);
    }
    return String(v);
  };
  const int = (key: string, min: number, max: number): number | undefined => {
    const v = str(key);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > max) {
      throw new Error(`context \`${key}\` must be an integer from ${min} to ${max} (got '${v}')`);
    }
    return n;
  };
  const bool = (key: string): boolean | undefined => {
    const v = str(key);
    if (v === undefined) return undefined;
    if (v !== "true" && v !== "false")
      throw new Error(`context \`${key}\` must be true or false (got '${v}')`);
    return v === "true";
  };
  const list = (key: string): string[] | undefined => {
    const v = ctx.tryGetContext(key);
    if (v === undefined || v === null || v === "") return undefined;
    if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v;
    if (typeof v === "string")
      return v
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
    throw new Error(`context \`${key}\` must be a comma-separated string or a list of strings`);
  };

  const mode = str("mode");
  if (mode !== undefined && !(MODES as readonly string[]).includes(mode)) {
    throw new Error(`context \`mode\` must be 'active-passive' or 'active-active' (got '${mode}')`);
  }

  // The config document, from a file, from the context, or the preset.
  const file = str("config");
  const inline = ctx.tryGetContext("fleet");
  if (file !== undefined && inline !== undefined) {
    throw new Error("context `config` (a file) and `fleet` (a document) are both set: give one");
  }
  let raw: unknown;
  let source: string;
  if (file !== undefined) {
    const path = resolve(cwd, file);
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      throw new Error(`context \`config\`: cannot read ${path}: ${(err as Error).message}`);
    }
    raw = parseConfigText(text, path);
    source = path;
  } else if (inline !== undefined) {
    source = "context `fleet`";
    raw = typeof inline === "string" ? parseConfigText(inline, "fleet.json") : inline;
  } else {
    raw = structuredClone(PRESET_CONFIG);
    source = "the preset config";
  }
  if (mode !== undefined && raw && typeof raw === "object" && !Array.isArray(raw)) {
    const doc = raw as { failover?: { mode?: unknown } };
    if (doc.failover?.mode !== undefined && doc.failover.mode !== mode) {
      throw new Error(
        `context \`mode\` is '${mode}' but failover.mode is '${String(doc.failover.mode)}' in ${source}: make them agree`,
      );
    }
    raw = { ...doc, failover: { ...(doc.failover ?? {}), mode } };
  }
  const config = parseFleetConfig(raw, source);

  const fleetId = str("fleetId") ?? "main";
  const removal = str("removalPolicy");
  if (removal !== undefined && removal !== "retain" && removal !== "destroy") {
    throw new Error(`context \`removalPolicy\` must be 'retain' or 'destroy' (got '${removal}')`);
  }
  const zoneName = str("zoneName");
  const dnsOnly = [
    "hostedZoneId",
    "createZone",
    "recordName",
    "secondaryAddresses",
    "failoverRecordName",
  ].filter((k) => ctx.tryGetContext(k) !== undefined);
  if (!zoneName && dnsOnly.length > 0) {
    throw new Error(`context \`${dnsOnly[0]}\` needs \`zoneName\` too`);
  }
  const instanceType = str("instanceType");
  const machineImageId = str("machineImageId");
  const account = str("account") ?? (env.CDK_DEFAULT_ACCOUNT || undefined);
  const region = str("region") ?? (env.CDK_DEFAULT_REGION || undefined);

  const props: HafleetStackProps = {
    fleetId,
    config,
    description: `hafleet fleet '${fleetId}' (${config.failover.mode})`,
    ...(account && region ? { env: { account, region } } : {}),
    ...defined({
      nodeCount: int("nodeCount", 2, 32),
      adminPort: int("adminPort", 1, 65535),
      checkerConcurrency: int("checkerConcurrency", 0, 10),
      accessLog: bool("accessLog"),
      maxAzs: int("maxAzs", 1, 16),
      natGateways: int("natGateways", 0, 16),
      listenerCidrs: list("listenerCidrs"),
      healthCheckPrefixListId: str("healthCheckPrefixListId"),
      notificationEmails: list("notificationEmails"),
      proxyEntry: optionalPath(str("proxyEntry"), cwd),
      checkerEntry: optionalPath(str("checkerEntry"), cwd),
      instanceType: instanceType ? new ec2.InstanceType(instanceType) : undefined,
      machineImage: machineImageId ? fixedImage(machineImageId) : undefined,
      removalPolicy:
        removal === "destroy"
          ? RemovalPolicy.DESTROY
          : removal === "retain"
            ? RemovalPolicy.RETAIN
            : undefined,
      dns: zoneName
        ? {
            zoneName,
            ...defined({
              hostedZoneId: str("hostedZoneId"),
              createZone: bool("createZone"),
              recordName: str("recordName"),
              secondaryAddresses: list("secondaryAddresses"),
              failoverRecordName: str("failoverRecordName"),
            }),
          }
        : undefined,
    }),
  };
  return { id: `hafleet-${fleetId}`, props, presetConfig: file === undefined && inline === undefined };
}

/** Builds the fleet's stack in `app` from its context, with the cdk-nag AwsSolutions checks. */
export function buildApp(app: App, cwd = process.cwd()): HafleetStack {
  const { id, props, presetConfig } = stackPropsFromContext(app.node, cwd);
  const stack = new HafleetStack(app, id, props);
  if (presetConfig) {
    // Shown by `cdk synth` and `cdk deploy`: the nodes would proxy to a sample backend.
    Annotations.of(stack).addWarningV2("hafleet:preset-config", PRESET_NOTICE);
  }
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
  return stack;
}

/** One AMI in whatever region the stack lands in (the emulator's, or a copy of your own). */
function fixedImage(imageId: string): ec2.IMachineImage {
  return {
    getImage: () => ({ imageId, osType: ec2.OperatingSystemType.LINUX, userData: ec2.UserData.forLinux() }),
  };
}

function optionalPath(p: string | undefined, cwd: string): string | undefined {
  return p === undefined ? undefined : resolve(cwd, p);
}

function defined<T extends Record<string, unknown>>(obj: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined)) as {
    [K in keyof T]?: Exclude<T[K], undefined>;
  };
}

/**
 * hafleet's version, from package.json: the one place it is written. The node
 * reports it in its heartbeat, the CLI prints it with --version; esbuild inlines
 * it into the node and checker bundles.
 */
import pkg from "../../package.json";

export const VERSION: string = pkg.version;

/**
 * Route 53 health checks as the stack creates them, one per weighted record:
 * TCP on the node's address, every 10 s, failing after `failureThreshold`
 * checks in a row.
 */
import { CreateHealthCheckCommand, type Route53Client } from "@aws-sdk/client-route-53";
import { uniqueId } from "./aws";

export interface TcpHealthCheckOptions {
  /** @default 8080 */
  readonly port?: number;
  /** @default 3 (Route 53's own default) */
  readonly failureThreshold?: number;
  /** @default a unique id */
  readonly callerReference?: string;
}

/** Creates the check and returns its id. */
export async function createTcpHealthCheck(
  route53: Route53Client,
  ip: string,
  options: TcpHealthCheckOptions = {},
): Promise<string> {
  const out = await route53.send(
    new CreateHealthCheckCommand({
      CallerReference: options.callerReference ?? uniqueId("hc"),
      HealthCheckConfig: {
        Type: "TCP",
        IPAddress: ip,
        Port: options.port ?? 8080,
        RequestInterval: 10,
        FailureThreshold: options.failureThreshold ?? 3,
      },
    }),
  );
  return out.HealthCheck!.Id!;
}

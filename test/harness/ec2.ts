/** EC2 resources on the emulator for tests and local mode: instances and fleet-tagged Elastic IPs. */
import {
  AllocateAddressCommand,
  DescribeImagesCommand,
  type EC2Client,
  RunInstancesCommand,
} from "@aws-sdk/client-ec2";
import { FLEET_TAG } from "../../lib/core/elastic-ip";

/** Starts `count` instances tagged with the fleet and node ids; returns their ids in order. */
export async function runInstances(
  ec2: EC2Client,
  fleetId: string,
  nodeIds: readonly string[],
): Promise<string[]> {
  const imageId = await anyImage(ec2);
  if (!imageId) throw new Error("the emulator offers no machine image");
  const ids: string[] = [];
  for (const nodeId of nodeIds) {
    const out = await ec2.send(
      new RunInstancesCommand({
        ImageId: imageId,
        InstanceType: "t3.micro",
        MinCount: 1,
        MaxCount: 1,
        TagSpecifications: [
          {
            ResourceType: "instance",
            Tags: [
              { Key: FLEET_TAG, Value: fleetId },
              { Key: "hafleet:node", Value: nodeId },
            ],
          },
        ],
      }),
    );
    ids.push(out.Instances![0]!.InstanceId!);
  }
  return ids;
}

/**
 * One of moto's machine images. Asked by name first: moto ignores `MaxResults`
 * and answers with its whole catalogue (over 1 MB), which a busy machine does
 * not always deliver within an AWS call's bound (`lib/core/aws.ts`).
 */
async function anyImage(ec2: EC2Client): Promise<string | undefined> {
  const named = await ec2.send(
    new DescribeImagesCommand({
      Filters: [{ Name: "name", Values: ["amzn2-ami-hvm-2.0.20180810-x86_64-gp2"] }],
    }),
  );
  const id = named.Images?.[0]?.ImageId;
  if (id) return id;
  return (await ec2.send(new DescribeImagesCommand({ MaxResults: 5 }))).Images?.[0]?.ImageId;
}

/** Allocates an Elastic IP tagged with the fleet; moto hands out addresses in 127.0.0.0/8. */
export async function allocateElasticIp(
  ec2: EC2Client,
  fleetId: string,
): Promise<{ allocationId: string; publicIp: string }> {
  const out = await ec2.send(
    new AllocateAddressCommand({
      Domain: "vpc",
      TagSpecifications: [{ ResourceType: "elastic-ip", Tags: [{ Key: FLEET_TAG, Value: fleetId }] }],
    }),
  );
  return { allocationId: out.AllocationId!, publicIp: out.PublicIp! };
}

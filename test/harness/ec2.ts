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
  const images = await ec2.send(new DescribeImagesCommand({ MaxResults: 5 }));
  const imageId = images.Images?.[0]?.ImageId;
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

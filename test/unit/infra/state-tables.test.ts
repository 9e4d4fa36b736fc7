import { RemovalPolicy } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import * as iam from "aws-cdk-lib/aws-iam";
import * as kms from "aws-cdk-lib/aws-kms";
import { StateTables } from "../../../lib/infra/state-tables";
import { actionsOf, newStack, resourcesOf, statements } from "./support";

describe("StateTables", () => {
  test("creates the State and Sessions tables keyed by pk and sk", () => {
    const stack = newStack();
    new StateTables(stack, "Tables");
    const t = Template.fromStack(stack);
    t.resourceCountIs("AWS::DynamoDB::Table", 2);
    t.allResourcesProperties("AWS::DynamoDB::Table", {
      KeySchema: [
        { AttributeName: "pk", KeyType: "HASH" },
        { AttributeName: "sk", KeyType: "RANGE" },
      ],
    });
  });

  test("bills on demand by default", () => {
    const stack = newStack();
    new StateTables(stack, "Tables");
    Template.fromStack(stack).allResourcesProperties("AWS::DynamoDB::Table", {
      BillingMode: "PAY_PER_REQUEST",
    });
  });

  test("turns on point-in-time recovery", () => {
    const stack = newStack();
    new StateTables(stack, "Tables");
    Template.fromStack(stack).allResourcesProperties("AWS::DynamoDB::Table", {
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
    });
  });

  test("expires items by the expiresAt attribute", () => {
    const stack = newStack();
    new StateTables(stack, "Tables");
    Template.fromStack(stack).allResourcesProperties("AWS::DynamoDB::Table", {
      TimeToLiveSpecification: { AttributeName: "expiresAt", Enabled: true },
    });
  });

  test("encrypts with the AWS-managed KMS key by default", () => {
    const stack = newStack();
    new StateTables(stack, "Tables");
    Template.fromStack(stack).allResourcesProperties("AWS::DynamoDB::Table", {
      SSESpecification: { SSEEnabled: true, KMSMasterKeyId: Match.absent() },
    });
  });

  test("encrypts with encryptionKey when given", () => {
    const stack = newStack();
    const key = new kms.Key(stack, "Key");
    new StateTables(stack, "Tables", { encryptionKey: key });
    Template.fromStack(stack).allResourcesProperties("AWS::DynamoDB::Table", {
      SSESpecification: { SSEEnabled: true, SSEType: "KMS", KMSMasterKeyId: Match.anyValue() },
    });
  });

  test("retains the tables by default", () => {
    const stack = newStack();
    new StateTables(stack, "Tables");
    const tables = Template.fromStack(stack).findResources("AWS::DynamoDB::Table");
    expect(Object.values(tables).map((r) => [r.DeletionPolicy, r.UpdateReplacePolicy])).toEqual([
      ["Retain", "Retain"],
      ["Retain", "Retain"],
    ]);
  });

  test("deletes the tables with removalPolicy DESTROY", () => {
    const stack = newStack();
    new StateTables(stack, "Tables", { removalPolicy: RemovalPolicy.DESTROY });
    const tables = Template.fromStack(stack).findResources("AWS::DynamoDB::Table");
    expect(Object.values(tables).map((r) => r.DeletionPolicy)).toEqual(["Delete", "Delete"]);
  });

  test("lets CloudFormation name the tables by default", () => {
    const stack = newStack();
    new StateTables(stack, "Tables");
    Template.fromStack(stack).allResourcesProperties("AWS::DynamoDB::Table", { TableName: Match.absent() });
  });

  test("uses the given table names", () => {
    const stack = newStack();
    new StateTables(stack, "Tables", {
      stateTableName: "hafleet-state",
      sessionsTableName: "hafleet-sessions",
    });
    const t = Template.fromStack(stack);
    t.hasResourceProperties("AWS::DynamoDB::Table", { TableName: "hafleet-state" });
    t.hasResourceProperties("AWS::DynamoDB::Table", { TableName: "hafleet-sessions" });
  });

  describe("grants", () => {
    const setup = (grant: (tables: StateTables, role: iam.Role) => void, key?: boolean) => {
      const stack = newStack();
      const tables = new StateTables(
        stack,
        "Tables",
        key ? { encryptionKey: new kms.Key(stack, "Key") } : {},
      );
      const role = new iam.Role(stack, "Role", { assumedBy: new iam.ServicePrincipal("ec2.amazonaws.com") });
      grant(tables, role);
      const t = Template.fromStack(stack);
      return { t, tables, stack, all: statements(t) };
    };

    test("grantStateReadWrite gives item actions on the State table for the fleet's partition only", () => {
      const { all, stack, tables } = setup((tables, role) => tables.grantStateReadWrite(role, "blue"));
      expect(all).toHaveLength(1);
      const s = all[0]!;
      expect(actionsOf(s).sort()).toEqual(
        [
          "dynamodb:BatchGetItem",
          "dynamodb:BatchWriteItem",
          "dynamodb:ConditionCheckItem",
          "dynamodb:DeleteItem",
          "dynamodb:GetItem",
          "dynamodb:PutItem",
          "dynamodb:Query",
          "dynamodb:UpdateItem",
        ].sort(),
      );
      expect(resourcesOf(s)).toEqual([stack.resolve(tables.state.tableArn)]);
      expect(s.Condition).toEqual({
        "ForAllValues:StringEquals": { "dynamodb:LeadingKeys": ["fleet#blue"] },
        Null: { "dynamodb:LeadingKeys": "false" },
      });
    });

    test("grantStateRead gives read actions only", () => {
      const { all } = setup((tables, role) => tables.grantStateRead(role, "blue"));
      expect(actionsOf(all[0]!).sort()).toEqual(
        ["dynamodb:BatchGetItem", "dynamodb:ConditionCheckItem", "dynamodb:GetItem", "dynamodb:Query"].sort(),
      );
    });

    test("grantSessionsReadWrite matches every listener of the fleet, and no other fleet", () => {
      const { all, stack, tables } = setup((tables, role) => tables.grantSessionsReadWrite(role, "blue"));
      expect(resourcesOf(all[0]!)).toEqual([stack.resolve(tables.sessions.tableArn)]);
      expect(all[0]!.Condition).toEqual({
        "ForAllValues:StringLike": { "dynamodb:LeadingKeys": ["fleet#blue#*"] },
        Null: { "dynamodb:LeadingKeys": "false" },
      });
    });

    test("grantSessionsRead gives read actions only", () => {
      const { all } = setup((tables, role) => tables.grantSessionsRead(role, "blue"));
      expect(actionsOf(all[0]!)).not.toContain("dynamodb:PutItem");
      expect(actionsOf(all[0]!)).toContain("dynamodb:GetItem");
    });

    test("never grants Scan, DescribeTable or a wildcard resource", () => {
      const { all } = setup((tables, role) => {
        tables.grantStateReadWrite(role, "blue");
        tables.grantSessionsReadWrite(role, "blue");
      });
      for (const s of all) {
        expect(actionsOf(s)).not.toContain("dynamodb:Scan");
        expect(actionsOf(s)).not.toContain("dynamodb:DescribeTable");
        expect(resourcesOf(s)).not.toContain("*");
      }
    });

    test("grants the customer-managed key with the tables", () => {
      const { all } = setup((tables, role) => tables.grantStateReadWrite(role, "blue"), true);
      const kmsActions = all.flatMap(actionsOf).filter((a) => a.startsWith("kms:"));
      expect(kmsActions).toEqual(expect.arrayContaining(["kms:Decrypt", "kms:Encrypt"]));
    });

    test.each(["Blue", "blue*", "a#b", ""])("refuses the fleet id %j, which IAM would widen", (fleetId) => {
      const stack = newStack();
      const tables = new StateTables(stack, "Tables");
      const role = new iam.Role(stack, "Role", { assumedBy: new iam.ServicePrincipal("ec2.amazonaws.com") });
      expect(() => tables.grantStateReadWrite(role, fleetId)).toThrow(
        `\`fleetId\` must be 1-63 lowercase letters, digits or '-', starting with a letter or digit (got '${fleetId}')`,
      );
    });
  });
});

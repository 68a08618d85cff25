import assert from "node:assert/strict";
import { test } from "node:test";
import { PostroomConfig } from "@postroom/config";
import { validateRouting } from "./routing.js";

const mailbox = (routing: Record<string, unknown>) => ({
  id: "support",
  address: "support@acme.test",
  inbound: { protocol: "imap", host: "127.0.0.1" },
  auth: { type: "password", password: "env:PW" },
  routing,
});

test("a rule set that cannot work is refused with each rule's path and the problem", () => {
  const config = PostroomConfig.parse({
    version: 1,
    database: { url: "postgres://x" },
    archive: { path: "/tmp/a" },
    tenants: [
      {
        id: "acme",
        agents: [{ id: "ann", password: "env:A", queues: ["email"] }],
        queues: [{ id: "email", overflow: "email" }],
        mailboxes: [
          mailbox({
            rules: [
              { subject: { regex: "order (\\d+)" }, queue: "email" },
              { queue: "email" },
              { from: { domain: "@vip.example" }, queue: "vip" },
            ],
          }),
        ],
      },
    ],
  });
  // The config check already refuses a broken regex; the bridge checks again for configs built in code.
  config.tenants[0]!.mailboxes[0]!.routing.rules[0]!.subject = { regex: "order (\\d+" };
  const problems = validateRouting(config);
  const paths = problems.map((p) => p.path);
  assert.deepEqual(paths.sort(), [
    "tenants[0].mailboxes[0].routing.rules[0].subject.regex",
    "tenants[0].mailboxes[0].routing.rules[1]",
    "tenants[0].mailboxes[0].routing.rules[2].from.domain",
    "tenants[0].mailboxes[0].routing.rules[2].queue",
    "tenants[0].queues[0].overflow",
    "tenants[0].queues[0].timeoutSeconds",
  ]);
  assert.match(problems.find((p) => p.path.endsWith("regex"))!.problem, /not a valid regular expression/);
  assert.match(problems.find((p) => p.path.endsWith("rules[2].queue"))!.problem, /served by no agent/);
});

test("a sound rule set passes", () => {
  const config = PostroomConfig.parse({
    version: 1,
    database: { url: "postgres://x" },
    archive: { path: "/tmp/a" },
    tenants: [{ id: "acme", mailboxes: [mailbox({ rules: [{ subject: { regex: "^order \\d+" }, queue: "orders" }, { kind: "bounce", offer: false }] })] }],
  });
  assert.deepEqual(validateRouting(config), []);
});

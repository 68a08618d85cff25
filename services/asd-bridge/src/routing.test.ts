import assert from "node:assert/strict";
import { test } from "node:test";
import { PostroomConfig } from "@postroom/config";
import type { Classification } from "@postroom/contracts";
import { route, validateRouting } from "./routing.js";

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

test("the archiver's verdict decides what is offered, through the tenant's classification actions and kind rules", () => {
  const parsed = PostroomConfig.parse({
    version: 1,
    database: { url: "postgres://x" },
    archive: { path: "/tmp/a" },
    tenants: [
      { id: "acme", mailboxes: [mailbox({ rules: [{ from: { domain: "vip.example" }, queue: "vip" }, { kind: "bounce", queue: "postmaster", offer: true }] })] },
      { id: "strict", classification: { bulk: "archive", autoReply: "flag" }, mailboxes: [mailbox({})] },
      { id: "legacy", mailboxes: [mailbox({ offerAutomatic: true })] },
    ],
  });
  const [acme, strict, legacy] = parsed.tenants.map((t) => ({ mailbox: t.mailboxes[0]!, settings: t.classification }));
  const mail = (classification: Classification, from = "ann@customer.example", offer = true) => ({
    from, to: ["support@acme.test"], cc: [], subject: "s", offer, classification, classificationReason: `reason for ${classification}`,
    flags: { autoReply: classification === "auto-reply", bounce: classification === "bounce", loop: classification === "loop" },
  });
  const decide = (t: typeof acme, m: ReturnType<typeof mail>) => {
    const d = route(t!.mailbox, m, t!.settings);
    return [d.offer, d.queue, d.flag ?? null];
  };
  // Defaults: human offered, bulk offered with its flag, the rest archived.
  assert.deepEqual(decide(acme, mail("human")), [true, "email", null]);
  assert.deepEqual(decide(acme, mail("bulk")), [true, "email", "Mailing list or bulk mail: reason for bulk"]);
  assert.deepEqual(decide(acme, mail("auto-reply")), [false, "email", null]);
  assert.deepEqual(decide(acme, mail("loop")), [false, "email", null]);
  // A rule without kind routes what is offered, but cannot offer what the verdict archives.
  assert.deepEqual(decide(acme, mail("human", "bob@vip.example")), [true, "vip", null]);
  assert.deepEqual(decide(acme, mail("auto-reply", "bob@vip.example")), [false, "email", null]);
  // A kind rule offers that kind on purpose, flagged.
  assert.deepEqual(decide(acme, mail("bounce")), [true, "postmaster", "Bounce (delivery failure report): reason for bounce"]);
  // The event's own offer=false (history import, loop breaker) always wins.
  assert.deepEqual(decide(acme, mail("human", "ann@customer.example", false)), [false, "email", null]);
  assert.deepEqual(decide(acme, mail("bounce", "x@y.example", false)), [false, "postmaster", null]);
  // Per tenant.
  assert.deepEqual(decide(strict, mail("bulk")), [false, "email", null]);
  assert.deepEqual(decide(strict, mail("auto-reply")), [true, "email", "Automatic reply: reason for auto-reply"]);
  // offerAutomatic: true (older configs) offers auto-replies, bounces and loops, flagged.
  assert.deepEqual(decide(legacy, mail("loop")), [true, "email", "Mail loop: reason for loop"]);
  // Events from before classification existed fall back to the flags.
  const { classification: _c, classificationReason: _r, ...old } = mail("auto-reply");
  assert.equal(route(acme!.mailbox, old, acme!.settings).offer, false);
});

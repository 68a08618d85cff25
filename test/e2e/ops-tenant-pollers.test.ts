import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { parse } from "yaml";
import { CHART, templates } from "../support/chart.js";
import { IngestWorld, type WorldMailbox } from "../support/ingest-world.js";

/**
 * What the chart makes of `tenants: [{ id: acme, poller: { replicas: 3 } }]` — three imap-poller
 * pods of one Deployment, each with the same tenant restriction — run as three real processes with
 * that environment, next to a second tenant's mailbox they must leave alone.
 */

const example = parse(readFileSync(join(CHART, "examples", "multi-tenant.yaml"), "utf8")) as { tenants: { id: string; poller?: { replicas?: number } }[] };
const acmeReplicas = example.tenants.find((t) => t.id === "acme")?.poller?.replicas ?? 0;
// The variable and value the chart's poller Deployment sets: `- name: X` + `value: {{ $tenant.id ... }}`.
const restriction = /- name: ([A-Z_]+)\n\s+value: \{\{ \$tenant\.id \| quote \}\}/.exec(templates().find((t) => t.file === "tenant-imap-poller.yaml")!.text)?.[1];

const acme: WorldMailbox[] = Array.from({ length: 6 }, (_, i) => ({ id: `a${i}`, user: `a${i}@acme.test`, password: `pw-a${i}`, inbound: { checkIntervalSeconds: 5 } }));
const globex: WorldMailbox = { id: "g0", user: "g0@globex.test", password: "pw-g0", tenant: "globex", inbound: { checkIntervalSeconds: 5 } };

let w: IngestWorld;

before(async () => {
  // On a secure bus, as the chart deploys them (natsUsers): the tenant's pollers log in as
  // imap-poller-acme, whose rights (inbox prefix, consumers, subjects) are acme's only.
  w = await IngestWorld.create("ops-tenant-pollers", [...acme, globex], { security: { bus: { extraUsers: [{ service: "imap-poller", tenant: "acme", user: "imap-poller-acme" }] } } });
});
after(async () => {
  await w?.close();
});

test("a tenant with poller replicas 3 runs three pollers restricted to it, which share its mailboxes and leave other tenants' alone", async () => {
  assert.equal(acmeReplicas, 3, "the example gives acme three pollers");
  assert.equal(restriction, "POSTROOM_TENANTS", "the chart restricts each poller with POSTROOM_TENANTS");
  const pollers = Array.from({ length: acmeReplicas }, (_, i) => w.startPoller(`acme-${i}`, { ...w.tenantPollerEnv("acme"), [restriction!]: "acme" }));
  const replicaOf = (i: number) => JSON.parse(pollers[i]!.logs.find((l) => l.includes("imap-poller replica starting"))!).replica as string;

  // Every acme mailbox is checked by exactly one replica, each replica has its share (6 / 3 = 2).
  const owners = await waitFor(
    async () => {
      const out: string[] = [];
      for (const m of acme) {
        const s = await w.status("acme", m.id);
        if (!s || !s.lastCheckAt || (s.state !== "idle" && s.state !== "polling") || !s.owner) return undefined;
        out.push(s.owner);
      }
      const ids = pollers.map((_, i) => replicaOf(i));
      const counts = ids.map((id) => out.filter((o) => o === id).length);
      return counts.every((c) => c === acme.length / acmeReplicas) ? { out, ids } : undefined;
    },
    { timeoutMs: 60_000, what: () => `an even spread over ${acmeReplicas} replicas\n${w.dump()}` },
  );
  assert.ok(owners.out.every((o) => owners.ids.includes(o)), "only these replicas own acme's mailboxes");

  // The other tenant's mailbox is nobody's here: no restricted poller touches it.
  const g = await w.status("globex", globex.id);
  assert.ok(!g || !g.owner || !owners.ids.includes(g.owner), `globex/${globex.id} is not polled by acme's pollers`);
  for (const p of pollers) assert.equal(p.count("globex"), 0, `${p.name} never mentions globex`);
  const dovecotLog = await w.dovecot.readLog();
  assert.match(dovecotLog, /Login: user=<a0@acme\.test>/, "the audit log shows acme's logins");
  assert.doesNotMatch(dovecotLog, /user=<g0@globex\.test>/, "and no login to the other tenant's mailbox");
});

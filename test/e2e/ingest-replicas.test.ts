import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { customerEmail } from "../support/mail.js";
import { auditSessions, IngestWorld, overlaps, type PollerProcess, type WorldMailbox } from "../support/ingest-world.js";

// The bound the poller states (services/imap-poller README): 10 s lease TTL, renewal every 2 s.
const TAKEOVER_BOUND_MS = 15_000;

const acme: WorldMailbox[] = Array.from({ length: 40 }, (_, i) => ({
  id: `m${String(i).padStart(2, "0")}`,
  user: `m${String(i).padStart(2, "0")}@acme.test`,
  password: `pw-${i}`,
  inbound: { checkIntervalSeconds: 5 },
}));
const beta: WorldMailbox[] = [0, 1].map((i) => ({ id: `b${i}`, user: `b${i}@beta.test`, password: `pw-b${i}`, tenant: "beta", inbound: { checkIntervalSeconds: 5 } }));

let w: IngestWorld;
let a: PollerProcess;
let b: PollerProcess;
let c: PollerProcess;

before(async () => {
  // Each tenant's pollers log in as that tenant's own user on a secure bus, as the chart deploys them.
  w = await IngestWorld.create("ingest-replicas", [...acme, ...beta], {
    security: { bus: { extraUsers: ["acme", "beta"].map((tenant) => ({ service: "imap-poller" as const, tenant, user: `imap-poller-${tenant}` })) } },
  });
});
after(async () => {
  await w?.close();
});

/** Owner of each mailbox; with `working`, only counted once it has checked (idle or polling). */
async function owners(list: WorldMailbox[], working = true): Promise<Map<string, string | null>> {
  const out = new Map<string, string | null>();
  for (const m of list) {
    const s = await w.status(m.tenant ?? "acme", m.id);
    out.set(m.id, s && (!working || ((s.state === "idle" || s.state === "polling") && s.lastCheckAt)) ? s.owner : null);
  }
  return out;
}

function ownerOf(p: PollerProcess): string {
  const line = p.logs.find((l) => l.includes("imap-poller replica starting"));
  return JSON.parse(line!).replica as string;
}

test("two replicas share 40 mailboxes; one is killed; all 40 keep being polled within the bound and never by both at once", async () => {
  a = w.startPoller("a", w.tenantPollerEnv("acme"));
  await waitFor(async () => [...(await owners(acme)).values()].every((o) => o !== null), { timeoutMs: 40_000, what: () => `a owns all\n${w.dump()}` });
  b = w.startPoller("b", w.tenantPollerEnv("acme"));
  // Adding a replica spreads the mailboxes.
  const spread = await waitFor(
    async () => {
      const o = [...(await owners(acme)).values()];
      const byB = o.filter((x) => x === ownerOf(b)).length;
      const byA = o.filter((x) => x === ownerOf(a)).length;
      return byA === 20 && byB === 20 ? { byA, byB } : undefined;
    },
    { timeoutMs: 40_000, what: () => `an even spread\n${w.dump()}` },
  );
  console.log(`spread after the second replica joined: a=${spread.byA} b=${spread.byB}`);

  // Mail to every mailbox is ingested by whichever replica owns it.
  for (const m of acme) await w.dovecot.appendMessage(m.user, customerEmail({ to: m.user, subject: `first ${m.id}` }));
  await waitFor(async () => (await w.count("SELECT count(*) AS n FROM messages")) === 40, { timeoutMs: 40_000, what: () => `40 archived\n${w.dump()}` });

  const bOwned = [...(await owners(acme)).entries()].filter(([, o]) => o === ownerOf(b)).map(([id]) => id);
  const killedAt = Date.now();
  await b.kill("SIGKILL");
  // Every mailbox b had is owned and checked by a again.
  await waitFor(
    async () => {
      for (const id of bOwned) {
        const s = await w.status("acme", id);
        if (s?.owner !== ownerOf(a) || s.state !== "idle" || !s.lastCheckAt || Date.parse(s.lastCheckAt) < killedAt) return false;
      }
      return true;
    },
    { timeoutMs: 30_000, intervalMs: 100, what: () => `takeover\n${w.dump()}` },
  );
  const took = Date.now() - killedAt;
  console.log(`takeover of ${bOwned.length} mailboxes, checked again, ${took} ms after SIGKILL (stated bound ${TAKEOVER_BOUND_MS} ms)`);
  assert.ok(took < TAKEOVER_BOUND_MS, `took ${took} ms`);

  for (const id of bOwned) await w.dovecot.appendMessage(`${id}@acme.test`, customerEmail({ to: `${id}@acme.test`, subject: `after ${id}` }));
  await waitFor(async () => (await w.count("SELECT count(*) AS n FROM messages")) === 40 + bOwned.length, {
    timeoutMs: 30_000,
    what: () => `mail after the kill archived\n${w.dump()}`,
  });
  assert.equal(await w.count("SELECT count(*) AS n FROM (SELECT rfc_message_id FROM messages GROUP BY rfc_message_id HAVING count(*) > 1) d"), 0, "nothing twice");

  // The server's log: no mailbox ever had sessions from both replicas at the same time.
  const log = await w.dovecot.readLog();
  const sessions = auditSessions(log);
  const fromReplicas = sessions.filter((s) => s.replica !== undefined);
  assert.ok(fromReplicas.some((s) => s.replica === ownerOf(b)) && fromReplicas.some((s) => s.replica === ownerOf(a)), "both replicas' sessions are in the log");
  const found = overlaps(sessions);
  // On a failure, the server's lines of the sessions involved and the pollers' own words about
  // those mailboxes (leases taken, released, lost), to tell a real double poll from a late log.
  const users = new Set(found.map((f) => f.slice(0, f.indexOf(":"))));
  // "user: replicaA sessionA and replicaB sessionB"
  const ids = new Set(found.flatMap((f) => { const t = f.split(" "); return [t[2]!, t[5]!]; }));
  const evidence = found.length === 0 ? "" : [
    ...log.split("\n").filter((l) => [...ids].some((id) => l.includes(id))),
    ...w.dump().split("\n").filter((l) => [...users].some((u) => l.includes(`"${u.split("@")[0]}"`)) && /lease|stopp|start/i.test(l)),
  ].join("\n");
  assert.deepEqual(found, [], evidence);
  console.log(`audited ${fromReplicas.length} poller sessions in Dovecot's log: no overlap`);
});

test("a replica restricted to a tenant polls only that tenant's mailboxes", async () => {
  c = w.startPoller("c", w.tenantPollerEnv("beta"));
  await waitFor(async () => [...(await owners(beta)).values()].every((o) => o === ownerOf(c)), { timeoutMs: 30_000, what: () => `c owns beta\n${w.dump()}` });
  assert.ok([...(await owners(acme, false)).values()].every((o) => o === ownerOf(a)), "acme stays with a");
  assert.equal(a.count('"tenant":"beta"'), 0, "a never touched beta");
});

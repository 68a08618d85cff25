/**
 * Arrival-to-offer latency of one email at a time: messages appended one by one to a mailbox
 * imap-poller holds in IDLE, with token-service, archiver and asd-bridge (built-in ACD) running as
 * processes. For each message it records when `mail.received`, `mail.archived` and
 * `session.offered` reached a plain NATS subscriber, and reports `mail.received → session.offered`
 * (the target of issue 13) with its two legs. The IMAP server's own notification delay is shown
 * beside it: APPEND start → EXISTS at a bare imapflow client idling on the same folder, and
 * APPEND start → mail.received at Postroom — so the figure that matters excludes the part any
 * IDLE reader pays.
 *
 *   node --conditions=source --import tsx bench/offer-latency.ts [messages=200]
 *
 * Loopback only; everything it starts is stopped and removed at the end.
 */
import { ImapFlow } from "imapflow";
import { IngestWorld } from "../test/support/ingest-world.js";

const COUNT = Math.max(10, Math.min(2000, Number(process.argv[2] ?? 200)));
const USER = "offers@acme.test";
const PASSWORD = "bench-pw";

const w = await IngestWorld.create("bench-offer", [{ id: "offers", user: USER, password: PASSWORD, inbound: { checkIntervalSeconds: 600, afterImport: { action: "none" } } }], {
  services: ["token-service", "archiver", "asd-bridge"],
  env: { LOG_LEVEL: "warn" },
});
const watcher = new ImapFlow({ host: w.dovecot.info.host, port: w.dovecot.info.imapPort, secure: false, doSTARTTLS: false, auth: { user: USER, pass: PASSWORD }, logger: false } as ConstructorParameters<typeof ImapFlow>[0]);
const writer = await w.dovecot.imapClient(USER);
try {
  const poller = w.startPoller("bench", { LOG_LEVEL: "warn" });
  await w.waitForState("acme", "offers", "idle", 180_000);
  await watcher.connect();
  await watcher.mailboxOpen("INBOX");
  await new Promise((r) => setTimeout(r, 1000)); // both in IDLE

  let existsWaiter: (() => void) | undefined;
  watcher.on("exists", () => existsWaiter?.());
  // Arrival times by message key, per event; the key is known from mail.received onwards.
  type Times = { received?: bigint; archived?: bigint; offered?: bigint };
  const times = new Map<string, Times>();
  const keyOfUid = new Map<number, string>();
  let notify: (() => void) | undefined;
  const listen = (subject: string, field: keyof Times) => {
    const sub = w.nc.subscribe(subject);
    void (async () => {
      for await (const m of sub) {
        const at = process.hrtime.bigint();
        const body = m.json() as { messageKey: string; source?: { uid: number } };
        const t = times.get(body.messageKey) ?? {};
        t[field] ??= at;
        times.set(body.messageKey, t);
        if (field === "received" && body.source) keyOfUid.set(body.source.uid, body.messageKey);
        notify?.();
      }
    })();
    return sub;
  };
  const subs = [
    listen(w.names.subjects.mailReceived("acme", "offers"), "received"),
    listen(w.names.subjects.mailArchived("acme", "offers"), "archived"),
    listen(w.names.subjects.sessionOffered("acme", "offers"), "offered"),
  ];
  await w.nc.flush();

  const rows: { exists: number; received: number; archived: number; offered: number }[] = [];
  const started = performance.now();
  for (let i = 0; i < COUNT; i++) {
    const raw = Buffer.from(
      `From: Customer ${i} <customer${i}@example.test>\r\nTo: ${USER}\r\nSubject: kettle ${i}\r\nMessage-ID: <bench-offer-${i}-${Date.now()}@example.test>\r\nDate: ${new Date().toUTCString()}\r\n\r\nMy kettle is broken (${i}).\r\n`,
    );
    const sawExists = new Promise<bigint>((r) => (existsWaiter = () => r(process.hrtime.bigint())));
    const appendedAt = process.hrtime.bigint();
    const result = await writer.append("INBOX", raw);
    const uid = result ? result.uid : undefined;
    if (uid === undefined) throw new Error("APPEND returned no UID");
    const exists = await sawExists;
    const deadline = performance.now() + 60_000;
    let t: Times | undefined;
    while (!(t = times.get(keyOfUid.get(uid) ?? ""))?.offered) {
      if (performance.now() > deadline) throw new Error(`message ${i} (UID ${uid}) not offered within 60 s: ${JSON.stringify(t ?? {}, (_k, v) => (typeof v === "bigint" ? String(v) : v))}\n${w.dump()}`);
      await new Promise<void>((r) => {
        notify = r;
        setTimeout(r, 1000);
      });
    }
    const ms = (a: bigint, b: bigint) => Number(a - b) / 1e6;
    rows.push({ exists: ms(exists, appendedAt), received: ms(t.received!, appendedAt), archived: ms(t.archived!, t.received!), offered: ms(t.offered!, t.received!) });
    // Arrivals spaced as real mail is: every reader is idle again before the next one.
    await new Promise((r) => setTimeout(r, 300));
  }
  const elapsed = (performance.now() - started) / 1000;
  for (const s of subs) s.unsubscribe();
  const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;
  const fmt = (xs: number[]) => `p50 ${pct(xs, 0.5).toFixed(1).padStart(7)} ms   p99 ${pct(xs, 0.99).toFixed(1).padStart(7)} ms   max ${Math.max(...xs).toFixed(1).padStart(7)} ms`;
  const col = (k: keyof (typeof rows)[number]) => rows.map((r) => r[k]);
  console.log(`${COUNT} emails appended one at a time to an idle mailbox (${elapsed.toFixed(0)} s); load average at the end: ${(await import("node:os")).loadavg().map((l) => l.toFixed(2)).join(" ")}`);
  console.log(`bare IDLE client, APPEND → EXISTS (server's notification): ${fmt(col("exists"))}`);
  console.log(`Postroom, APPEND → mail.received:                         ${fmt(col("received"))}`);
  console.log(`Postroom, mail.received → mail.archived:                  ${fmt(col("archived"))}`);
  console.log(`Postroom, mail.received → session.offered (target ≤50/≤150): ${fmt(col("offered"))}`);
  await poller.kill();
} finally {
  await writer.logout().catch(() => undefined);
  await watcher.logout().catch(() => undefined);
  await w.close();
}
process.exit(0);

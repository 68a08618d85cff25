/**
 * Arrival-to-published latency over IDLE: 500 messages appended one at a time to a mailbox that
 * imap-poller holds in IDLE (check interval 10 minutes, so only IDLE explains a pick-up); for
 * each, the time from the start of the APPEND to the `mail.received` event on NATS. The baseline,
 * in the same run: the time from the same APPEND to the EXISTS notification at a bare imapflow
 * client idling on the same folder — the floor any IDLE-based reader pays.
 *
 *   node --conditions=source --import tsx bench/ingest-latency.ts [messages=500]
 *
 * Loopback only; everything it starts is stopped and removed at the end.
 */
import { buildMailCorpus } from "@postroom/testkit";
import { ImapFlow } from "imapflow";
import { IngestWorld } from "../test/support/ingest-world.js";

const COUNT = Math.max(20, Math.min(2000, Number(process.argv[2] ?? 500)));
const USER = "latency@acme.test";
const PASSWORD = "bench-pw";
const corpus = buildMailCorpus({ bigAttachmentBytes: 64 * 1024 });

const w = await IngestWorld.create("bench-latency", [{ id: "latency", user: USER, password: PASSWORD, inbound: { checkIntervalSeconds: 600, afterImport: { action: "none" } } }]);
const watcher = new ImapFlow({ host: w.dovecot.info.host, port: w.dovecot.info.imapPort, secure: false, doSTARTTLS: false, auth: { user: USER, pass: PASSWORD }, logger: false, autoIdleDelay: 250 } as ConstructorParameters<typeof ImapFlow>[0]);
const writer = await w.dovecot.imapClient(USER);
try {
  const poller = w.startPoller("bench");
  await w.waitForState("acme", "latency", "idle");
  await watcher.connect();
  await watcher.mailboxOpen("INBOX");
  await new Promise((r) => setTimeout(r, 1000)); // both in IDLE

  let existsWaiter: (() => void) | undefined;
  watcher.on("exists", () => existsWaiter?.());
  const received = new Map<number, () => void>();
  const sub = w.nc.subscribe(w.names.subjects.mailReceived("acme", "latency"));
  void (async () => {
    for await (const m of sub) {
      const uid = (m.json() as { source: { uid: number } }).source.uid;
      received.get(uid)?.();
    }
  })();

  const postroom: number[] = [];
  const bare: number[] = [];
  for (let i = 0; i < COUNT; i++) {
    const raw = Buffer.concat([Buffer.from(`X-Bench-Seq: ${i}\r\n`), corpus[i % corpus.length]!.raw]);
    let appendedAt = 0n;
    const sawExists = new Promise<bigint>((r) => (existsWaiter = () => r(process.hrtime.bigint())));
    // The UID is known only when APPEND returns; the event may come first, so listen by the next UID.
    const uidNext = i + 1;
    const published = new Promise<bigint>((r) => received.set(uidNext, () => r(process.hrtime.bigint())));
    appendedAt = process.hrtime.bigint();
    const result = await writer.append("INBOX", raw);
    if (!result || result.uid !== uidNext) throw new Error(`unexpected UID ${result ? result.uid : "none"}`);
    const [e, p] = await Promise.all([sawExists, published]);
    bare.push(Number(e - appendedAt) / 1e6);
    postroom.push(Number(p - appendedAt) / 1e6);
    received.delete(uidNext);
    // Arrivals are spaced, as real mail is: both readers are back in IDLE before the next one
    // (the poller re-enters IDLE 250 ms after its check).
    await new Promise((r) => setTimeout(r, 300));
  }
  sub.unsubscribe();
  const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;
  const fmt = (xs: number[]) => `p50 ${pct(xs, 0.5).toFixed(1)} ms, p99 ${pct(xs, 0.99).toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms`;
  console.log(`${COUNT} messages, one at a time, over IDLE (timed from the start of each APPEND)`);
  console.log(`bare imapflow IDLE client, APPEND → EXISTS:      ${fmt(bare)}`);
  console.log(`Postroom imap-poller, APPEND → mail.received:    ${fmt(postroom)}`);
  console.log(`ratio Postroom / bare IDLE: p50 ${(pct(postroom, 0.5) / pct(bare, 0.5)).toFixed(2)}, p99 ${(pct(postroom, 0.99) / pct(bare, 0.99)).toFixed(2)}`);
  await poller.kill();
} finally {
  await writer.logout().catch(() => undefined);
  await watcher.logout().catch(() => undefined);
  await w.close();
}

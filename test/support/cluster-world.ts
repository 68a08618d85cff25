import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { startNatsCluster, waitFor, type NatsCluster } from "@postroom/testkit";
import { customerEmail } from "./mail.js";
import { E2eWorld, SUPPORT } from "./fixture.js";

/**
 * The whole system on a three-node JetStream cluster, every stream and bucket with three
 * replicas, the services given all three URLs; and what its failover tests check after each fault.
 */
export class ClusterWorld {
  readonly sent = new Map<string, string>(); // message key -> sha256 of what was appended

  private constructor(
    readonly cluster: NatsCluster,
    readonly w: E2eWorld,
  ) {}

  static async create(prefix: string): Promise<ClusterWorld> {
    const cluster = await startNatsCluster();
    // The world (its own connection, the services' NATS_URL, the namespace cleanup) uses the cluster.
    process.env.NATS_URL = cluster.url;
    const w = await E2eWorld.create(prefix, (c) => {
      c.nats = { ...c.nats, url: cluster.url, replicas: 3 };
    }, { secure: false });
    const cw = new ClusterWorld(cluster, w);
    await w.system.start();
    await w.mailboxReady(60_000);
    return cw;
  }

  async close(): Promise<void> {
    await this.w.close();
    await this.cluster.stop();
  }

  async append(subject: string): Promise<string> {
    // A customer of its own per mail: the tenant's loop breaker offers at most 10 mails from one
    // sender within 15 minutes and archives the rest unoffered, which is right for a loop but would
    // leave a file's 55 mails from one sender with 10 sessions.
    const raw = customerEmail({ to: SUPPORT, subject, from: `customer${this.sent.size + 1}@customer.example` });
    const { uid, uidValidity } = await this.w.dovecot.appendMessage(SUPPORT, raw);
    const key = `acme/support/imap/INBOX/${uidValidity}/${uid}`;
    this.sent.set(key, createHash("sha256").update(raw).digest("hex"));
    return key;
  }

  /** Every appended message archived exactly once with its bytes, one session each, all marked seen. */
  async everythingOnce(what: string): Promise<void> {
    const { w, sent } = this;
    await waitFor(
      async () => {
        const [{ m, s }] = (await w.rows<{ m: string; s: string }>(
          "SELECT (SELECT count(*) FROM messages WHERE direction = 'inbound') AS m, (SELECT count(*) FROM sessions) AS s",
        )) as [{ m: string; s: string }];
        return Number(m) === sent.size && Number(s) === sent.size;
      },
      { timeoutMs: 180_000, intervalMs: 500, what: () => `${sent.size} archived and offered (${what})\n${w.system.dump()}` },
    );
    const rows = await w.rows<{ message_key: string; sha256: string; sessions: string }>(
      "SELECT m.message_key, m.sha256, (SELECT count(*) FROM sessions s WHERE s.message_id = m.id) AS sessions FROM messages m WHERE direction = 'inbound'",
    );
    assert.equal(rows.length, sent.size);
    for (const r of rows) {
      assert.equal(r.sha256, sent.get(r.message_key), `${r.message_key} archived as appended`);
      assert.equal(Number(r.sessions), 1, `${r.message_key}: one session`);
      assert.equal(createHash("sha256").update(await w.emlOf(r.message_key)).digest("hex"), r.sha256, `${r.message_key}: .eml byte for byte`);
    }
    // The commit point came after the archive: every message is marked seen, and only once archived.
    await waitFor(
      async () => {
        const flags = await w.dovecot.flagsOf(SUPPORT);
        return [...flags.values()].filter((f) => f.includes("\\Seen")).length === sent.size;
      },
      { timeoutMs: 60_000, what: () => `all ${sent.size} marked seen\n${w.system.dump()}` },
    );
  }
}

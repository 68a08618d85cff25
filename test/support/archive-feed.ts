import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { MailArchived, messageKey, type MailReceived, type Names, type SourceKey } from "@postroom/contracts";
import { jetStreamOf, openObjectStore, publishJson, type NatsConnection, type ObjectStore } from "@postroom/nats-kit";

/**
 * Feeds the archiver directly, the way imap-poller does (raw bytes into the object store, then
 * `mail.received`), for bursts larger than a test Dovecot should be asked to serve; and records
 * every `mail.archived` confirmation (a core subscription sees each publish, duplicates included).
 */
export class ArchiveFeed {
  readonly confirmations: MailArchived[] = [];
  #raw!: ObjectStore;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly names: Names,
  ) {}

  static async open(nc: NatsConnection, names: Names): Promise<ArchiveFeed> {
    const f = new ArchiveFeed(nc, names);
    f.#raw = await openObjectStore(nc, names.buckets.rawMail);
    const sub = nc.subscribe(names.subjects.wildcard.mailArchived());
    void (async () => {
      for await (const m of sub) f.confirmations.push(MailArchived.parse(m.json()));
    })();
    return f;
  }

  /** Delivers one message as UID `uid` of acme/support's INBOX; returns its key and SHA-256. */
  async deliver(raw: Buffer, uid: number): Promise<{ key: string; sha256: string }> {
    const source: SourceKey = { protocol: "imap", tenant: "acme", mailbox: "support", folder: "INBOX", uidValidity: 9, uid };
    const key = messageKey(source);
    const sha256 = createHash("sha256").update(raw).digest("hex");
    await this.#raw.putBlob({ name: key }, raw);
    const event: MailReceived = {
      version: "v1",
      messageKey: key,
      source,
      raw: { bucket: this.names.buckets.rawMail, name: key, size: raw.length, sha256 },
      receivedAt: new Date().toISOString(),
      fetchedAt: new Date().toISOString(),
      offer: false,
      oversize: false,
    };
    await publishJson(jetStreamOf(this.nc), this.names.subjects.mailReceived("acme", "support"), event, { msgId: key });
    return { key, sha256 };
  }
}

/** Every message folder in an archive's layout (<tenant>/<mailbox>/<yyyy>/<mm>/<dd>/<leaf>), staging excluded. */
export async function messageFolders(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (!e.isDirectory() || (depth === 0 && e.name === ".tmp")) continue;
      if (depth === 5) out.push(join(dir, e.name));
      else await walk(join(dir, e.name), depth + 1);
    }
  };
  await walk(root, 0);
  return out;
}

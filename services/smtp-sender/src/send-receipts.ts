import { SEND_RECEIPT_TTL_MS, SendReceipt, type Names } from "@postroom/contracts";
import { openKv, type KV, type NatsConnection } from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";

/** Recipients a server refused while it accepted the others, with its words. */
export type Refusal = SendReceipt["refused"][number];

/**
 * The server's acceptance of a message, kept in JetStream beside the `sends` row.
 *
 * After a 250 the sender must record "sent" before anything else, or a redelivered command goes
 * out again. PostgreSQL alone made that window as long as a database outage: a sender holding a
 * 250 it could not write, and killed meanwhile, left a row that still said "sending" (the chaos
 * run delivered a reply twice that way). The receipt is written to a replicated KV bucket at the
 * same moment as the row, so the acceptance is durable as soon as either store has it; a command
 * taken up again after an attempt reads the receipt before sending. What remains is the window no
 * SMTP client can close: the server committed the message and the process died before either
 * write — one round trip, not an outage.
 */
export class SendReceipts {
  #kv: KV | undefined;

  constructor(private readonly o: { nc: NatsConnection; names: Names; replicas: number; logger: Logger }) {}

  async open(): Promise<void> {
    this.#kv = await openKv(this.o.nc, this.o.names.buckets.sendReceipts, { replicas: this.o.replicas, ttlMs: SEND_RECEIPT_TTL_MS });
  }

  /**
   * Writes the receipt of an accepted command. Never throws: the `sends` row written beside it is
   * the authority, and a bus that is down must not hold up recording the send there.
   */
  async write(tenant: string, commandId: string, serverResponse: string, refused: readonly Refusal[]): Promise<void> {
    const receipt: SendReceipt = { version: "v1", commandId, serverResponse, refused: [...refused], acceptedAt: new Date().toISOString() };
    try {
      await this.#bucket().put(this.o.names.sendReceiptKey(tenant, commandId), JSON.stringify(receipt));
    } catch (error) {
      this.o.logger.warn({ commandId, problem: (error as Error).message }, "send receipt not written; the sends row records the acceptance alone");
    }
  }

  /**
   * The receipt of `commandId`, if its server accepted it. Read from the bucket's leader (see
   * nats-kit's openKv), so a receipt written just before a crash is seen. Throws when the bus cannot
   * answer: the caller must not send without knowing.
   */
  async read(tenant: string, commandId: string): Promise<SendReceipt | undefined> {
    const entry = await this.#bucket().get(this.o.names.sendReceiptKey(tenant, commandId));
    if (!entry || entry.operation !== "PUT" || entry.value.length === 0) return undefined;
    const parsed = SendReceipt.safeParse(entry.json());
    if (!parsed.success || parsed.data.commandId !== commandId) {
      // Unreadable or for another id (a base64url collision cannot happen; a hand-written key can):
      // treat as absent, but say so — the send that follows may be a duplicate.
      this.o.logger.warn({ commandId }, "send receipt unreadable; treating the command as not yet accepted");
      return undefined;
    }
    return parsed.data;
  }

  #bucket(): KV {
    if (!this.#kv) throw new Error("SendReceipts.open() was not called");
    return this.#kv;
  }
}

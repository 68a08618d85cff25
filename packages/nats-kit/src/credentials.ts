import type { NatsConnection } from "@nats-io/transport-node";
import { Credential, CredentialError, SealedReply, type CredentialPurpose, type Names } from "@postroom/contracts";
import { openReply, replyKeys, SealError } from "./sealed.js";

/** token-service answered with an error (needs an administrator, or a transient failure). */
export class CredentialUnavailableError extends Error {
  override name = "CredentialUnavailableError";
  constructor(
    readonly kind: CredentialError["error"]["kind"] | "no-answer",
    message: string,
    readonly code: string | null = null,
    readonly fix: string | null = null,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * Asks token-service for a mailbox credential over NATS request-reply. Callers keep no secret
 * longer than one login: they ask again for every connection.
 */
export class CredentialClient {
  constructor(
    private readonly nc: NatsConnection,
    private readonly names: Names,
    private readonly timeoutMs = 10_000,
  ) {}

  /** `rejected: true` tells token-service the server refused the previous credential (fetch a fresh one). */
  async get(tenant: string, mailbox: string, purpose: CredentialPurpose, rejected = false): Promise<Credential> {
    let reply: unknown;
    try {
      const msg = await this.nc.request(
        this.names.subjects.credentialRequest(tenant, mailbox),
        // The reply is sealed to this process's key: no other client on the bus can read it.
        JSON.stringify({ version: "v1", purpose, rejected, tenant, mailbox, replyKey: replyKeys().publicKey }),
        { timeout: this.timeoutMs },
      );
      reply = msg.json();
      const sealed = SealedReply.safeParse(reply);
      if (sealed.success) reply = openReply(sealed.data);
    } catch (cause) {
      if (cause instanceof SealError) throw new CredentialUnavailableError("transient", cause.message, null, null, { cause });
      throw new CredentialUnavailableError("no-answer", `token-service did not answer for ${tenant}/${mailbox}: ${(cause as Error).message}`, null, "check that token-service is running", { cause });
    }
    const ok = Credential.safeParse(reply);
    if (ok.success) return ok.data;
    const failed = CredentialError.safeParse(reply);
    if (failed.success) {
      const e = failed.data.error;
      throw new CredentialUnavailableError(e.kind, e.message, e.code, e.fix);
    }
    throw new CredentialUnavailableError("transient", "token-service sent a reply this version does not understand");
  }
}

import type { PostroomConfig } from "@postroom/config";
import { findMailbox, resolveSecret, SecretError } from "@postroom/config";
import { CredentialRequest, type Credential, type CredentialError, type Names } from "@postroom/contracts";
import type { NatsConnection } from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";
import type { Subscription } from "@nats-io/transport-node";

export interface CredentialServiceOptions {
  nc: NatsConnection;
  names: Names;
  config: PostroomConfig;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  /** Serve only these tenants (per-tenant deployments); all when absent. */
  tenants?: string[];
}

type Reply = Credential | CredentialError;

/**
 * Answers credential requests. This is the only process that resolves secret references, so the
 * rest of the system holds references, never values. Replies go only to the requester's inbox;
 * nothing here logs a credential (the logger redacts `password` and `accessToken` as well).
 */
export class CredentialService {
  #subs: Subscription[] = [];
  #served = 0;

  constructor(private readonly options: CredentialServiceOptions) {}

  get served(): number {
    return this.#served;
  }

  async start(): Promise<void> {
    const { nc, names, tenants } = this.options;
    const subjects = tenants?.length
      ? tenants.map((t) => names.subjects.wildcard.credentialRequest(t))
      : [names.subjects.wildcard.credentialRequest()];
    for (const subject of subjects) {
      // A queue group lets several token-service replicas share the load.
      const sub = nc.subscribe(subject, { queue: "token-service" });
      this.#subs.push(sub);
      void (async () => {
        for await (const msg of sub) {
          // <root>.<tenant>.auth.credential.<mailbox>: the root is a single token.
          const parts = msg.subject.split(".");
          const reply = await this.#answer(parts[1] ?? "", parts[4] ?? "", msg.data);
          this.#served++;
          msg.respond(JSON.stringify(reply));
        }
      })();
    }
    await nc.flush();
  }

  async #answer(tenantId: string, mailboxId: string, data: Uint8Array): Promise<Reply> {
    const log = this.options.logger.child({ tenant: tenantId, mailbox: mailboxId });
    let request: CredentialRequest;
    try {
      request = CredentialRequest.parse(JSON.parse(new TextDecoder().decode(data)));
    } catch {
      return failure("transient", "the credential request is not a v1 request", null, "upgrade the requesting service");
    }
    const ref = findMailbox(this.options.config, tenantId, mailboxId);
    if (!ref) return failure("unknown-mailbox", `no mailbox ${tenantId}/${mailboxId} in the configuration`, null, "add it to the config file");
    const { mailbox } = ref;
    const auth = request.purpose === "smtp" ? (mailbox.smtp?.auth ?? mailbox.auth) : mailbox.auth;
    switch (auth.type) {
      case "password":
        try {
          const password = await resolveSecret(auth.password, this.options.env ?? process.env);
          log.debug({ purpose: request.purpose }, "password credential served");
          return { version: "v1", mechanism: "PLAIN", username: auth.username ?? mailbox.address, password };
        } catch (error) {
          const message = error instanceof SecretError ? error.message : "the password reference could not be resolved";
          log.warn({ purpose: request.purpose, problem: message }, "credential unavailable");
          return failure("needs-admin", message, "secret-unresolved", "set the environment variable or file named in the config");
        }
      case "microsoft365":
      case "google-service-account":
        // OAuth client credentials arrive with the authentication work (token acquisition with
        // msal-node and service-account JWTs). Until then say so plainly instead of pretending.
        return failure(
          "needs-admin",
          `${auth.type} authentication is not available in this build of token-service`,
          "oauth-unsupported",
          "use a password or app-password mailbox with this version",
        );
    }
  }

  async stop(): Promise<void> {
    // Drain: finish answering requests in hand, then unsubscribe.
    await Promise.all(this.#subs.map((s) => s.drain()));
    this.#subs = [];
  }
}

function failure(kind: CredentialError["error"]["kind"], message: string, code: string | null, fix: string | null): CredentialError {
  return { version: "v1", error: { kind, message, code, fix } };
}

import type { Readable } from "node:stream";
import { graphEndpoint, type Mailbox } from "@postroom/config";
import { graphUserUrl, readGraphError, retryAfterMs } from "@postroom/runtime";
import type { Credential } from "@postroom/contracts";
import type { SmtpVerdict } from "./classify.js";
import type { CredentialSource, PoolSendResult } from "./smtp-pool.js";

/**
 * Where one mailbox's mail goes through Microsoft Graph, and what a refusal's fix may name.
 * Built from the mailbox's config by {@link graphTarget}.
 */
export interface GraphTarget {
  tenant: string;
  /** The mailbox's id in the config (the credential request names it). */
  mailbox: string;
  /** Graph's base URL, without /v1.0 and without a trailing slash. */
  endpoint: string;
  /** The user principal name or object id in Graph (`graph.user`, else the address). */
  user: string;
  /** `graph.saveToSentItems`: false removes the copy Graph files in Sent Items after a send. */
  saveToSentItems: boolean;
  /** App-only (microsoft365) or delegated: the fix for a refusal differs. */
  appOnly: boolean;
  /** The app's client id, filled into the fix text when known. */
  clientId?: string;
}

/** The Graph side of a mailbox with `outbound: graph`. Pure. */
export function graphTarget(tenant: string, mailboxId: string, mailbox: Mailbox): GraphTarget {
  const auth = mailbox.auth;
  return {
    tenant,
    mailbox: mailboxId,
    endpoint: graphEndpoint(mailbox),
    user: mailbox.graph.user ?? mailbox.address,
    saveToSentItems: mailbox.graph.saveToSentItems,
    appOnly: auth.type === "microsoft365",
    ...("clientId" in auth && typeof auth.clientId === "string" ? { clientId: auth.clientId } : {}),
  };
}

/**
 * A request Graph refused, or one that never got an answer. `responseCode` is the HTTP status
 * (absent when there was no answer, with `code` then naming the network error, as nodemailer's
 * errors do), so the sender's bookkeeping treats it like an SMTP failure; `verdict` is the
 * decision of {@link classifyGraphSendError}.
 */
export class GraphSendError extends Error {
  override readonly name = "GraphSendError";
  /** HTTP status; absent when no answer came. */
  readonly responseCode: number | undefined;
  /** Graph's error code (`ErrorAccessDenied`), or `http-<status>` when the body had none. */
  readonly graphCode: string;
  /** The network error's code (`ETIMEDOUT`, `ECONNREFUSED`) when no answer came. */
  readonly code: string | undefined;
  /** What to do with the command: retry, fail for good, or hold for an administrator. */
  readonly verdict: SmtpVerdict;
  /** The wait the server asked for (Retry-After), bounded; a retry should not come sooner. */
  readonly retryAfterMs: number | undefined;

  constructor(o: { message: string; status?: number; graphCode: string; code?: string; verdict: SmtpVerdict; retryAfterMs?: number; cause?: unknown }) {
    super(o.message, o.cause === undefined ? undefined : { cause: o.cause });
    this.responseCode = o.status;
    this.graphCode = o.graphCode;
    this.code = o.code;
    this.verdict = o.verdict;
    this.retryAfterMs = o.retryAfterMs;
  }
}

/** The facts of one refused sendMail, as {@link classifyGraphSendError} reads them. */
export interface GraphRefusal {
  /** HTTP status; 0 for no answer (timeout, connection refused or reset). */
  status: number;
  /** Graph's `error.code`. */
  code: string;
  /** Graph's `error.message`. */
  message: string;
  appOnly: boolean;
  clientId?: string;
  /** The mailbox as Graph knows it (`user` of the URL). */
  user: string;
  /** What was asked, for the reason's wording (default "the send"). */
  request?: string;
}

/**
 * What a sendMail refusal means for the command. Pure, decided on the status and Graph's error
 * code (never the wording, which changes):
 * - no answer, 429, 5xx: retry (429/503 come with Retry-After, which the caller honours);
 * - 401 (after one fresh token): needs an administrator — the token is not one Graph takes;
 * - 403 / 404 naming the mailbox or its permission, 400 for the MIME or the recipients, and any
 *   other 4xx: permanent, with the fix in the reason (a permanent failure has no fix field).
 */
export function classifyGraphSendError(r: GraphRefusal): SmtpVerdict {
  const said = r.status === 0 ? `Microsoft Graph did not answer: ${r.message}` : `Microsoft Graph refused ${r.request ?? "the send"}: ${r.status} ${r.code}: ${r.message}`;
  if (r.status === 0 || r.status === 429 || r.status >= 500) return { kind: "retry", reason: said };
  if (r.status === 401) {
    return {
      kind: "needs-admin",
      reason: said,
      fix: "Graph refused the token twice (a fresh one included): it must be a Microsoft Graph token (audience https://graph.microsoft.com, or the cloud's Graph), unexpired, from the mailbox's own tenant; run postroom test-auth for the mailbox to see its claims",
    };
  }
  if (r.code === "ErrorAccessDenied" || r.code === "ErrorSendAsDenied" || r.status === 403) {
    const app = r.clientId ?? "<clientId>";
    const fix = r.appOnly
      ? `grant the app the Microsoft Graph application permission Mail.Send (Entra admin center → App registrations → your app → API permissions → Microsoft Graph → Application permissions → Mail.Send, then Grant admin consent) and put ${r.user} in the app's RBAC for Applications scope: New-ManagementRoleAssignment -App ${app} -Role "Application Mail.Send" -CustomResourceScope <scope name> (or allow it in the app's application access policy: Test-ApplicationAccessPolicy -Identity ${r.user} -AppId ${app})`
      : `the signed-in account needs the delegated Mail.Send permission and the right to send as ${r.user} (Add-RecipientPermission ${r.user} -Trustee <signed-in user> -AccessRights SendAs); sign in again with postroom auth sign-in`;
    return { kind: "permanent", reason: `${said} — fix: ${fix}` };
  }
  if (r.code === "MailboxNotEnabledForRESTAPI" || r.code === "ErrorInvalidUser" || r.code === "ResourceNotFound" || r.status === 404) {
    return {
      kind: "permanent",
      reason: `${said} — fix: ${r.user} must be a licensed (or shared) mailbox in Exchange Online, not on-premises or a consumer account: check graph.user / the address, the mailbox's licence (Get-Mailbox ${r.user} | Format-List RecipientTypeDetails) and, for a hybrid setup, that the mailbox has been moved to Exchange Online`,
    };
  }
  if (r.code.startsWith("ErrorMimeContent")) return { kind: "permanent", reason: `${said} — Graph could not read the composed MIME message` };
  if (/Recipient/i.test(r.code)) return { kind: "permanent", reason: `${said} — correct the recipients and send again` };
  if (r.status === 413 || r.code === "ErrorMessageSizeExceeded") return { kind: "permanent", reason: `${said} — the message is larger than Exchange Online accepts: remove attachments` };
  return { kind: "permanent", reason: said };
}

export interface GraphSenderOptions {
  /** token-service's Graph credential (purpose "graph"); `rejected: true` after Graph refused a token. */
  credential: CredentialSource;
  /** Deadline of one sendMail request (default 120 s: the body may be megabytes). */
  sendTimeoutMs?: number;
  /** Deadline of the other requests (default 30 s). */
  timeoutMs?: number;
  /**
   * Longest wait for a throttled request that is waited out in hand (default 60 s); a longer
   * Retry-After, or throttling that outlasts {@link throttleRetries}, goes back to the sender's
   * retry plan with the wait attached.
   */
  maxWaitMs?: number;
  /** Throttled answers (429/503/504) waited out in hand before giving the command back (default 3). */
  throttleRetries?: number;
  /** Wait when a throttled answer names none (default 5 s). */
  defaultWaitMs?: number;
  /**
   * Looks for the Sent Items copy to remove (saveToSentItems false) this many times (default 5):
   * Exchange files it asynchronously, usually within a second or two of the 202.
   */
  savedCopyLookups?: number;
  /** First wait between those lookups (default 500 ms), doubling. */
  savedCopyDelayMs?: number;
  /** A token this close to its expiry is not used again (default 60 s). */
  expiryMarginMs?: number;
  now?: () => number;
  /** How waits are made (tests hand in a recording one; default a timer). */
  sleep?: (ms: number) => Promise<void>;
}

/** A Graph token in hand for one mailbox. */
interface Token {
  accessToken: string;
  expiresAt: number;
}

/**
 * Sends through Microsoft Graph (`POST /users/{user}/sendMail`, the MIME form): the composed
 * bytes, base64, exactly as archived — Message-ID, In-Reply-To and References included, so the
 * thread is the one the customer sees. The SMTP pool's counterpart for `outbound: graph`.
 *
 * - The JSON form of sendMail was rejected: Graph would build its own MIME, with its own
 *   Message-ID, and the archived copy would no longer be the sent one.
 * - The MIME form always files a copy in Sent Items (it has no saveToSentItems switch);
 *   {@link removeSavedCopy} takes it out again for mailboxes that want none.
 * - A token is kept per mailbox until shortly before it expires. A 401 asks token-service for a
 *   fresh one (`rejected: true`) and tries once more.
 * - 429/503/504 are waited out here while the wait is short (the command stays in hand), so a
 *   throttled mailbox's replies leave in order as soon as Graph allows.
 * - Duplicates: a 504 or a timeout after the body was sent may hide a message Graph did take —
 *   the same window as a lost SMTP 250. The retry sends the same bytes (same Message-ID), so the
 *   receiver and our archive can tell the copy.
 */
export class GraphSender {
  readonly #tokens = new Map<string, Token>();
  /** Credential requests in flight per mailbox, so concurrent sends share one. */
  readonly #asking = new Map<string, Promise<Token>>();
  readonly #now: () => number;
  readonly #sleep: (ms: number) => Promise<void>;

  constructor(private readonly o: GraphSenderOptions) {
    this.#now = o.now ?? Date.now;
    this.#sleep = o.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  /** Sends one composed message. Throws {@link GraphSendError} (or the credential source's error). */
  async send(target: GraphTarget, raw: Buffer | Readable): Promise<PoolSendResult> {
    const bytes = Buffer.isBuffer(raw) ? raw : await readAll(raw);
    // Graph wants the MIME as base64 text; the whole body is one string (no line breaks needed).
    const body = bytes.toString("base64");
    const url = `${this.#user(target)}/sendMail`;
    const res = await this.#call(target, "POST", url, { body, contentType: "text/plain", timeoutMs: this.o.sendTimeoutMs ?? 120_000 });
    await res.arrayBuffer().catch(() => undefined);
    // 202 has no body; the request id is what Microsoft support asks for.
    const requestId = res.headers.get("request-id");
    return { response: `${res.status} ${res.statusText || "Accepted"} (Microsoft Graph sendMail${requestId ? `, request-id ${requestId}` : ""})`, rejectedErrors: [] };
  }

  /**
   * Removes the copy Graph filed in Sent Items for a sent message (found by its Message-ID), for
   * `saveToSentItems: false`. Returns how many copies were removed: 0 when none appeared within
   * the lookups. Idempotent, so a redelivered command may call it again.
   */
  async removeSavedCopy(target: GraphTarget, rfcMessageId: string): Promise<number> {
    const filter = `internetMessageId eq '${rfcMessageId.replaceAll("'", "''")}'`;
    const url = `${this.#user(target)}/mailFolders/sentitems/messages?$filter=${encodeURIComponent(filter)}&$select=id`;
    const lookups = Math.max(1, this.o.savedCopyLookups ?? 5);
    let delay = this.o.savedCopyDelayMs ?? 500;
    for (let i = 0; i < lookups; i++) {
      if (i > 0) {
        await this.#sleep(delay);
        delay *= 2;
      }
      const res = await this.#call(target, "GET", url, { accept: "application/json", request: "the Sent Items lookup" });
      const found = ((await res.json()) as { value?: { id?: string }[] }).value ?? [];
      const ids = found.map((m) => m.id).filter((id): id is string => typeof id === "string");
      if (ids.length === 0) continue;
      for (const id of ids) {
        const gone = await this.#call(target, "DELETE", `${this.#user(target)}/messages/${encodeURIComponent(id)}`, { allow404: true, request: "the removal of the Sent Items copy" });
        await gone.arrayBuffer().catch(() => undefined);
      }
      return ids.length;
    }
    return 0;
  }

  /** Forgets every token (they are kept in memory only). */
  close(): void {
    this.#tokens.clear();
  }

  #user(target: GraphTarget): string {
    return graphUserUrl(target.endpoint, target.user);
  }

  /**
   * One request with the mailbox's token: once more with a fresh token after a 401, and again
   * after each short throttling wait. Anything else that is not 2xx becomes a GraphSendError.
   */
  async #call(
    target: GraphTarget,
    method: string,
    url: string,
    o: { body?: string; contentType?: string; accept?: string; timeoutMs?: number; allow404?: boolean; request?: string },
  ): Promise<Response> {
    let refreshed = false;
    let throttled = 0;
    for (;;) {
      const token = await this.#token(target, false);
      const headers: Record<string, string> = { authorization: `Bearer ${token.accessToken}` };
      if (o.contentType) headers["content-type"] = o.contentType;
      if (o.accept) headers.accept = o.accept;
      let res: Response;
      try {
        res = await fetch(url, { method, headers, ...(o.body !== undefined ? { body: o.body } : {}), signal: AbortSignal.timeout(o.timeoutMs ?? this.o.timeoutMs ?? 30_000) });
      } catch (error) {
        throw noAnswer(error, target);
      }
      if (res.ok || (o.allow404 && res.status === 404)) return res;
      const refusal = await readGraphError(res);
      if (res.status === 401 && !refreshed) {
        // Possibly a token revoked or rotated early: one fresh one, then the verdict stands.
        refreshed = true;
        this.#tokens.delete(keyOf(target));
        await this.#token(target, true);
        continue;
      }
      const asked = retryAfterMs(res.headers.get("retry-after"), this.#now());
      if (res.status === 429 || res.status === 503 || res.status === 504) {
        const wait = asked ?? this.o.defaultWaitMs ?? 5_000;
        if (throttled < (this.o.throttleRetries ?? 3) && wait <= (this.o.maxWaitMs ?? 60_000)) {
          throttled++;
          await this.#sleep(wait);
          continue;
        }
      }
      const verdict = classifyGraphSendError({ status: res.status, code: refusal.code, message: refusal.message, appOnly: target.appOnly, user: target.user, ...(o.request ? { request: o.request } : {}), ...(target.clientId ? { clientId: target.clientId } : {}) });
      throw new GraphSendError({
        message: verdict.reason,
        status: res.status,
        graphCode: refusal.code,
        verdict,
        ...(asked !== undefined ? { retryAfterMs: Math.min(asked, 15 * 60_000) } : {}),
      });
    }
  }

  /** The mailbox's token: the one in hand while it is good, else token-service's. */
  async #token(target: GraphTarget, rejected: boolean): Promise<Token> {
    const key = keyOf(target);
    const held = this.#tokens.get(key);
    if (!rejected && held && held.expiresAt - (this.o.expiryMarginMs ?? 60_000) > this.#now()) return held;
    let asking = this.#asking.get(key);
    if (!asking || rejected) {
      asking = this.o
        .credential(target.tenant, target.mailbox, rejected)
        .then((credential) => {
          const token = tokenOf(credential, target);
          this.#tokens.set(key, token);
          return token;
        })
        .finally(() => {
          if (this.#asking.get(key) === asking) this.#asking.delete(key);
        });
      this.#asking.set(key, asking);
    }
    return asking;
  }
}

const keyOf = (t: GraphTarget) => `${t.tenant}/${t.mailbox}`;

function tokenOf(credential: Credential, target: GraphTarget): Token {
  if (credential.mechanism !== "XOAUTH2") {
    // Graph takes bearer tokens only; a password credential means the config is not a Graph one.
    const verdict: SmtpVerdict = { kind: "needs-admin", reason: `mailbox ${target.tenant}/${target.mailbox} got a password credential for Microsoft Graph`, fix: "outbound: graph needs auth type microsoft365 or microsoft-delegated" };
    throw new GraphSendError({ message: verdict.reason, graphCode: "no-token", verdict });
  }
  return { accessToken: credential.accessToken, expiresAt: Date.parse(credential.expiresAt) };
}

/** A request that got no answer (deadline, refused or reset connection, DNS): always worth a retry. */
function noAnswer(error: unknown, target: GraphTarget): GraphSendError {
  const e = error as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = e.name === "TimeoutError" ? "ETIMEDOUT" : (e.cause?.code ?? "ECONNECTION");
  const detail = e.name === "TimeoutError" ? "no answer before the deadline" : (e.cause?.message ?? e.message ?? String(error));
  const verdict = classifyGraphSendError({ status: 0, code, message: `${new URL(target.endpoint).host}: ${detail}`, appOnly: target.appOnly, user: target.user });
  // A certificate the machine does not trust is not cured by retrying.
  if (/certificate|CERT_|self[- ]signed|unable to verify/i.test(`${code} ${detail}`)) {
    const untrusted: SmtpVerdict = { kind: "needs-admin", reason: verdict.reason, fix: "the Graph endpoint's TLS certificate is not trusted: install its CA (NODE_EXTRA_CA_CERTS) or correct graph.url" };
    return new GraphSendError({ message: untrusted.reason, graphCode: code, code, verdict: untrusted, cause: error });
  }
  return new GraphSendError({ message: verdict.reason, graphCode: code, code, verdict, cause: error });
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

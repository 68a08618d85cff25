import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { graphUserUrl, readGraphError, retryAfterMs } from "@postroom/runtime";

/**
 * A refusal from Microsoft Graph: the HTTP status, Graph's error code and message, the wait the
 * server asked for (429/503 Retry-After) and, where an administrator must act, what to do. The
 * poller's failure decision reads these fields (see classify.ts), so a Graph mailbox recovers the
 * way an IMAP one does: a fresh token after a 401, needs-admin for a missing grant, back-off for
 * throttling.
 */
export class GraphError extends Error {
  override readonly name = "GraphError";
  /** 401: the token was refused; one fresh token is asked for before reporting needs-admin. */
  readonly authenticationFailed: boolean;

  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfterMs?: number,
    readonly adminFix?: string,
  ) {
    super(message);
    this.authenticationFailed = status === 401;
  }

  /** True for the delta token being unknown to the server: start the delta again from the top. */
  get syncStateLost(): boolean {
    return this.status === 410 || /^sync(State)?(NotFound|Invalid)|resyncRequired/i.test(this.code);
  }
}

/** What an administrator does about a Graph refusal that no retry can cure. */
function adminFix(status: number, code: string): string | undefined {
  if (code === "ErrorAccessDenied" || status === 403) {
    return "give the app Mail.ReadWrite on this mailbox: the application permission with admin consent, and the mailbox inside its RBAC for Applications scope (New-ManagementRoleAssignment) or application access policy; postroom test-auth shows the commands";
  }
  if (code === "MailboxNotEnabledForRESTAPI" || code === "ErrorInvalidUser" || code === "ResourceNotFound") {
    return "check graph.user (or the address): the mailbox must exist in Exchange Online, licensed and not on-premises";
  }
  return undefined;
}

/** Longest wait taken from a Retry-After: a stuck header never parks a mailbox for hours. */
const MAX_RETRY_AFTER_MS = 600_000;

async function refusal(res: Response): Promise<GraphError> {
  const { code, message } = await readGraphError(res);
  const asked = res.status === 429 || res.status === 503 ? retryAfterMs(res.headers.get("retry-after")) : undefined;
  const wait = asked === undefined ? undefined : Math.min(asked, MAX_RETRY_AFTER_MS);
  return new GraphError(res.status, code, `Microsoft Graph: ${res.status} ${code}: ${message}`, wait ?? (res.status === 429 ? 30_000 : undefined), adminFix(res.status, code));
}

export interface GraphClientOptions {
  /** Graph's base URL without /v1.0 (graphEndpoint of the mailbox). */
  endpoint: string;
  /** The access token for the next request (token-service's, renewed by the caller). */
  token: () => Promise<string>;
  /** Deadline of one request (default 30 s). */
  timeoutMs?: number;
}

/** One page of a delta query. */
export interface DeltaPage {
  value: DeltaItem[];
  nextLink?: string;
  deltaLink?: string;
}

/** A message as a delta page lists it (`@removed` for one that left the folder). */
export interface DeltaItem {
  id: string;
  receivedDateTime?: string;
  isRead?: boolean;
  "@removed"?: { reason: string };
}

/**
 * The few Graph mail calls the poller makes, over node's fetch. Every request carries
 * `Prefer: IdType="ImmutableId"`, so a message keeps its id when it is moved — the id is the
 * message's identity in the archive, as a UID is for IMAP.
 */
export class GraphClient {
  constructor(private readonly o: GraphClientOptions) {}

  /** The first delta URL of a folder (the cursor is the deltaLink the last page gives). */
  deltaStart(user: string, folder: string): string {
    const f = folder.toUpperCase() === "INBOX" ? "inbox" : folder;
    return `${graphUserUrl(this.o.endpoint, user)}/mailFolders/${encodeURIComponent(f)}/messages/delta?$select=id,receivedDateTime,isRead`;
  }

  async delta(url: string, pageSize: number): Promise<DeltaPage> {
    const res = await this.#request("GET", url, { prefer: `odata.maxpagesize=${pageSize}` });
    const body = (await res.json()) as { value?: DeltaItem[]; "@odata.nextLink"?: string; "@odata.deltaLink"?: string };
    return {
      value: body.value ?? [],
      ...(body["@odata.nextLink"] ? { nextLink: body["@odata.nextLink"] } : {}),
      ...(body["@odata.deltaLink"] ? { deltaLink: body["@odata.deltaLink"] } : {}),
    };
  }

  /** The message's MIME exactly as stored, as a stream, and its length when the server says it. */
  async mime(user: string, id: string): Promise<{ body: Readable; length: number | undefined }> {
    const res = await this.#request("GET", `${this.#message(user, id)}/$value`, { stream: true });
    const length = Number(res.headers.get("content-length"));
    return { body: Readable.fromWeb(res.body as WebReadableStream<Uint8Array>), length: Number.isFinite(length) && length > 0 ? length : undefined };
  }

  async markRead(user: string, id: string): Promise<void> {
    await this.#drain(await this.#request("PATCH", this.#message(user, id), { json: { isRead: true } }));
  }

  async move(user: string, id: string, destination: string): Promise<void> {
    await this.#drain(await this.#request("POST", `${this.#message(user, id)}/move`, { json: { destinationId: destination } }));
  }

  async delete(user: string, id: string): Promise<void> {
    await this.#drain(await this.#request("DELETE", this.#message(user, id), { allow404: true }));
  }

  #message(user: string, id: string): string {
    return `${graphUserUrl(this.o.endpoint, user)}/messages/${encodeURIComponent(id)}`;
  }

  async #drain(res: Response): Promise<void> {
    await res.arrayBuffer().catch(() => undefined);
  }

  async #request(method: string, url: string, o: { prefer?: string; json?: unknown; stream?: boolean; allow404?: boolean } = {}): Promise<Response> {
    const prefer = ['IdType="ImmutableId"', ...(o.prefer ? [o.prefer] : [])].join(", ");
    const headers: Record<string, string> = { authorization: `Bearer ${await this.o.token()}`, prefer, accept: "application/json" };
    if (o.json !== undefined) headers["content-type"] = "application/json";
    const timeout = this.o.timeoutMs ?? 30_000;
    let res: Response;
    try {
      // A download may stream for long: ten deadlines in all, and raw-store's idle timer catches a
      // body that stalls sooner.
      res = await fetch(url, { method, headers, ...(o.json !== undefined ? { body: JSON.stringify(o.json) } : {}), signal: AbortSignal.timeout(o.stream ? timeout * 10 : timeout) });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new GraphError(0, cause?.code ?? "network", `Microsoft Graph unreachable: ${cause?.message ?? (error as Error).message}`);
    }
    if (res.ok || (o.allow404 && res.status === 404)) return res;
    throw await refusal(res);
  }
}

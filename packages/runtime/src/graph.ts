/**
 * The Microsoft Graph facts the poller, smtp-sender and `postroom test-auth` share: where a
 * mailbox's resources are, how a refusal reads, and how long the server asked us to wait.
 */

/** `{endpoint}/v1.0/users/{user}`: the root of one mailbox's mail resources. */
export function graphUserUrl(endpoint: string, user: string): string {
  return `${endpoint}/v1.0/users/${encodeURIComponent(user)}`;
}

/** A refusal as Graph words it: `error.code` and `error.message` of its JSON body. */
export interface GraphErrorBody {
  /** Graph's code (`ErrorAccessDenied`), or `http-<status>` when the body is not Graph's (a proxy's page). */
  code: string;
  /** Graph's message, else the status text. */
  message: string;
}

/** Reads a refused answer's body (consuming it). */
export async function readGraphError(res: Response): Promise<GraphErrorBody> {
  let code = `http-${res.status}`;
  let message = res.statusText || `HTTP ${res.status}`;
  try {
    const body = (await res.json()) as { error?: { code?: unknown; message?: unknown } };
    if (typeof body.error?.code === "string" && body.error.code !== "") code = body.error.code;
    if (typeof body.error?.message === "string" && body.error.message !== "") message = body.error.message;
  } catch {
    // Not JSON: the status says enough.
  }
  return { code, message };
}

/** Retry-After (seconds or an HTTP date) in milliseconds, or undefined when absent or unreadable. */
export function retryAfterMs(header: string | null, now: number = Date.now()): number | undefined {
  if (header === null || header.trim() === "") return undefined;
  const seconds = Number(header);
  const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(header) - now;
  return Number.isFinite(ms) ? Math.max(0, ms) : undefined;
}

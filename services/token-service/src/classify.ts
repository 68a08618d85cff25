import { aadstsEntry } from "./catalogue.js";

/** A failure to obtain a token, decided: retry with backoff, or ask a person. */
export interface TokenFailure {
  /** transient: network, timeouts, 5xx, throttling; needs-admin: the setup is wrong. */
  kind: "transient" | "needs-admin";
  /** Provider code (`AADSTS7000215`, Google's `invalid_grant`, `ECONNREFUSED`), null when none. */
  code: string | null;
  /** What happened, without any secret. */
  message: string;
  /** What to do; null for transient failures that need nothing. */
  fix: string | null;
  /** The catalogue's meaning of the code, when known. */
  meaning: string | null;
}

/** An HTTP refusal from a token endpoint that msal-node does not wrap (Google's). */
export class TokenEndpointError extends Error {
  override name = "TokenEndpointError";
  constructor(
    readonly status: number,
    readonly error: string,
    readonly description: string,
    options?: { cause?: unknown },
  ) {
    super(`token endpoint answered ${status} ${error}: ${description}`, options);
  }
}

/** A credential the config names but that is unusable (missing secret, unreadable key file). */
export class CredentialConfigError extends Error {
  override name = "CredentialConfigError";
  constructor(
    message: string,
    readonly fix: string,
    readonly code = "credential-config",
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const NETWORK_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "EPIPE",
  "UND_ERR_CONNECT_TIMEOUT", "UND_ERR_SOCKET", "UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT",
]);
const TLS_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT", "SELF_SIGNED_CERT_IN_CHAIN", "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED", "ERR_TLS_CERT_ALTNAME_INVALID", "CERT_UNTRUSTED",
]);
/** Google's OAuth error codes that only a person can fix. */
const GOOGLE_ADMIN: Record<string, string> = {
  invalid_grant: "check the service account key is current (IAM → Service accounts → Keys) and the server clock; the mailbox must exist in the Workspace domain",
  unauthorized_client: "authorise domain-wide delegation: Google Admin console → Security → API controls → Domain-wide delegation → Add the service account's client id with scope https://mail.google.com/",
  invalid_client: "the service account or its key was deleted or is wrong: create a new JSON key (IAM → Service accounts → Keys) and update keyFile",
  invalid_scope: "the scope must be https://mail.google.com/",
  access_denied: "authorise domain-wide delegation for https://mail.google.com/ in the Google Admin console",
};

/** The chain of causes, outermost first (fetch wraps the socket error in `cause`). */
function chain(error: unknown): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  let e: unknown = error;
  for (let i = 0; i < 5 && e !== null && typeof e === "object"; i++) {
    out.push(e as Record<string, unknown>);
    e = (e as { cause?: unknown }).cause;
  }
  return out;
}

/**
 * Decides what a failed token request means, from protocol facts only: the AADSTS number, the
 * HTTP status, Google's OAuth error code, the socket or TLS error code. Pure; unit-tested.
 */
export function classifyTokenFailure(error: unknown): TokenFailure {
  const links = chain(error);
  const text = links.map((l) => `${String(l.errorMessage ?? "")} ${String(l.message ?? "")}`).join(" ");
  const message = String(links[0]?.errorMessage || links[0]?.message || error).split(/\r?\n/)[0]!.slice(0, 500);

  if (error instanceof CredentialConfigError) return { kind: "needs-admin", code: error.code, message: error.message, fix: error.fix, meaning: null };

  const aadsts = /AADSTS(\d+)/.exec(text);
  if (aadsts) {
    const entry = aadstsEntry(Number(aadsts[1]));
    if (entry) return { kind: entry.kind, code: entry.code, message, fix: entry.kind === "needs-admin" ? entry.fix : null, meaning: entry.meaning };
  }
  const status = links.map((l) => l.status).find((s): s is number => typeof s === "number");
  if (status !== undefined && (status >= 500 || status === 429 || status === 408)) {
    return { kind: "transient", code: aadsts ? `AADSTS${aadsts[1]}` : `HTTP ${status}`, message, fix: null, meaning: "the identity platform is unavailable or throttling" };
  }
  if (error instanceof TokenEndpointError) {
    const fix = GOOGLE_ADMIN[error.error];
    if (fix !== undefined) return { kind: "needs-admin", code: error.error, message, fix, meaning: error.description };
  }
  for (const l of links) {
    const code = typeof l.code === "string" ? l.code : undefined;
    if (code !== undefined && TLS_CODES.has(code)) {
      return {
        kind: "needs-admin",
        code,
        message,
        fix: "the identity platform's TLS certificate is not trusted: check for an intercepting proxy and give its CA with NODE_EXTRA_CA_CERTS, or correct authorityHost",
        meaning: "the TLS certificate of the token endpoint could not be verified",
      };
    }
    if (code !== undefined && NETWORK_CODES.has(code)) return { kind: "transient", code, message, fix: null, meaning: "the identity platform could not be reached" };
    if (l.name === "AbortError" || l.name === "TimeoutError") return { kind: "transient", code: "timeout", message, fix: null, meaning: "the token request timed out" };
  }
  const errorCode = links.map((l) => l.errorCode).find((c): c is string => typeof c === "string");
  if (errorCode !== undefined && /network|endpoints_resolution|timed_out|unknown/i.test(errorCode)) {
    return { kind: "transient", code: errorCode, message, fix: null, meaning: "the identity platform could not be reached" };
  }
  if (aadsts || (status !== undefined && status >= 400) || (errorCode !== undefined && /invalid|unauthorized|denied/.test(errorCode))) {
    // A refusal the catalogue does not list: still a refusal, so not retried in a loop.
    return {
      kind: "needs-admin",
      code: aadsts ? `AADSTS${aadsts[1]}` : (errorCode ?? `HTTP ${status}`),
      message,
      fix: "look the code up at https://login.microsoftonline.com/error and correct the app registration or the config",
      meaning: null,
    };
  }
  return { kind: "transient", code: errorCode ?? null, message, fix: null, meaning: null };
}

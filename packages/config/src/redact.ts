import { isSecretRef } from "./secrets.js";

/** What an inline secret is shown as. */
export const REDACTED = "***";

/**
 * Fields that hold secrets, by key name. Redaction goes by key name over the whole tree rather than
 * by schema path, so a secret field added later under one of these names (smtp.auth, a new ACD) is
 * redacted without anyone remembering to update a list of paths. Over-redacting is harmless.
 */
const SECRET_KEYS = new Set(["password", "clientSecret", "privateKey", "keyFile", "signingSecret", "secret", "token"]);
/** Secret only when a string: `certificate` is also the name of the object holding certificate+privateKey. */
const SECRET_STRING_KEYS = new Set(["certificate"]);
/** Lists of secrets, by key name: every string in them is one. */
const SECRET_LIST_KEYS = new Set(["previousKeys"]);
/** Keys that hold a secret only under one parent (`tokenStore.key`; `tls.key` is a file path). */
const SECRET_CHILD_KEYS: Record<string, Set<string>> = { tokenStore: new Set(["key"]) };
/** URLs whose userinfo password must go: database.url, nats.url, webhook URLs. */
const URL_KEYS = new Set(["url", "authorityHost", "tokenUrl", "authorizeUrl"]);

/** A secret as it may be shown: the reference itself (`env:NAME`, `file:/path`), or `***`. */
export function redactSecret(value: string): string {
  return isSecretRef(value) ? value : REDACTED;
}

/**
 * Replaces the password in every URL of a (comma-separated) URL list:
 * `postgres://app:hunter2@db/postroom` → `postgres://app:***@db/postroom`.
 */
export function redactUrl(value: string): string {
  if (isSecretRef(value)) return value;
  return value.replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^:/@\s,]*:)([^@\s,]*)@/gi, `$1${REDACTED}@`);
}

/**
 * A deep copy of a configuration (parsed or raw) in which every secret shows as its reference, or as
 * `***` when it is an inline literal. Use it for everything printed or logged.
 */
export function redactConfig<T>(config: T): T {
  return redact(config, undefined, undefined) as T;
}

function redact(value: unknown, key: string | undefined, parent: string | undefined): unknown {
  if (Array.isArray(value)) {
    const list = key !== undefined && SECRET_LIST_KEYS.has(key);
    return value.map((v) => (list && typeof v === "string" ? redactSecret(v) : redact(v, undefined, key)));
  }
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redact(v, k, key)]));
  }
  if (typeof value === "string" && key !== undefined) {
    if (SECRET_KEYS.has(key) || SECRET_STRING_KEYS.has(key) || (parent !== undefined && SECRET_CHILD_KEYS[parent]?.has(key))) return redactSecret(value);
    if (URL_KEYS.has(key)) return redactUrl(value);
  }
  return value;
}

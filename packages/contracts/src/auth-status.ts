import { z } from "zod";

/**
 * A mailbox's authentication state, kept by token-service in the mailbox-status KV bucket under
 * `names.mailboxAuthKey(tenant, mailbox)` (`<tenant>.<mailbox>.auth`), beside the poller's entry.
 * It never holds a secret or a token: only what an administrator needs to act.
 */
export const MailboxAuthStatus = z.object({
  version: z.literal("v1"),
  tenant: z.string(),
  mailbox: z.string(),
  /** Which kind of credential the mailbox uses. */
  provider: z.enum(["password", "microsoft365", "google-service-account", "microsoft-delegated", "google-delegated"]),
  /** ok: the last credential was served; transient: retrying with backoff; needs-admin: a person must fix the setup. */
  state: z.enum(["ok", "transient", "needs-admin"]),
  /** The provider's code of the last failure (`AADSTS7000215`, `invalid_grant`, ...), null when ok. */
  code: z.string().nullable(),
  /** What went wrong, in words; null when ok. */
  message: z.string().nullable(),
  /** What to do about it; null when ok. */
  fix: z.string().nullable(),
  /** Expiry of the access token currently served (OAuth mailboxes), null otherwise. */
  tokenExpiresAt: z.string().nullable(),
  /** Secrets and certificates that expire soon or have expired. */
  warnings: z.array(
    z.object({
      /** "client secret" or "certificate". */
      what: z.string(),
      expiresAt: z.string(),
      message: z.string(),
      fix: z.string(),
    }),
  ),
  /** The last delegated sign-in (`postroom auth sign-in`), for the CLI that waits for it. */
  signIn: z
    .object({
      /** The id the sign-in reply gave the CLI. */
      id: z.string(),
      state: z.enum(["pending", "done", "failed"]),
      /** The account that signed in (done), or why it failed. */
      message: z.string().nullable(),
      at: z.string(),
    })
    .optional(),
  updatedAt: z.string(),
});
export type MailboxAuthStatus = z.infer<typeof MailboxAuthStatus>;

import type { Smtp } from "@postroom/config";
import type { Credential } from "@postroom/contracts";
import type SMTPTransport from "nodemailer/lib/smtp-transport/index.js";

/** Deadlines of one SMTP conversation; every network step has one. */
export interface SmtpDeadlines {
  connectionTimeoutMs: number;
  greetingTimeoutMs: number;
  socketTimeoutMs: number;
}

export const defaultDeadlines: SmtpDeadlines = { connectionTimeoutMs: 30_000, greetingTimeoutMs: 30_000, socketTimeoutMs: 120_000 };

/** The port a TLS mode implies when the config gives none: 465 implicit, 587 STARTTLS, 25 plain. */
export function defaultPort(tls: Smtp["tls"]): number {
  return tls === "implicit" ? 465 : tls === "starttls" ? 587 : 25;
}

/**
 * nodemailer transport options for one mailbox's SMTP settings and one credential. Pure, so the
 * TLS rules are testable: STARTTLS is *required* (never silently plain) when configured,
 * certificates are verified unless the config explicitly turns that off, and plain text is only
 * possible with `tls: none`.
 */
export function transportOptions(smtp: Smtp, credential: Credential, deadlines: SmtpDeadlines = defaultDeadlines): SMTPTransport.Options {
  return {
    host: smtp.host,
    port: smtp.port ?? defaultPort(smtp.tls),
    secure: smtp.tls === "implicit",
    requireTLS: smtp.tls === "starttls",
    ignoreTLS: smtp.tls === "none",
    tls: { rejectUnauthorized: smtp.verifyCertificate, minVersion: "TLSv1.2" },
    auth:
      credential.mechanism === "PLAIN"
        ? { user: credential.username, pass: credential.password }
        : { type: "OAuth2", user: credential.username, accessToken: credential.accessToken },
    connectionTimeout: deadlines.connectionTimeoutMs,
    greetingTimeout: deadlines.greetingTimeoutMs,
    socketTimeout: deadlines.socketTimeoutMs,
    // nodemailer would otherwise log through its own logger, secrets included at debug level.
    logger: false,
    debug: false,
  };
}

/**
 * Provider presets and the facts about the big mail providers that the schema, `config check` and
 * the Softdial importer share. Kept free of zod so the semantic checks (which walk raw input) and
 * the schema's transform use the same table.
 */

/** Providers a mailbox may name with `provider:`; each fills host, port, TLS and OAuth scopes. */
export const PROVIDER_NAMES = ["outlook-com", "office365", "gmail", "google-workspace"] as const;
export type ProviderName = (typeof PROVIDER_NAMES)[number];

/** Authentication types a mailbox's `auth.type` (or `smtp.auth.type`) may have. */
export type AuthTypeName = "password" | "microsoft365" | "google-service-account" | "microsoft-delegated" | "google-delegated";

interface Endpoint {
  host: string;
  port: number;
  tls: "implicit" | "starttls";
}

/** One provider's preset. */
export interface ProviderPreset {
  /** Who it is for, in the operator's words (used in messages). */
  label: string;
  imap: Endpoint;
  pop3: Endpoint;
  smtp: Endpoint;
  /** auth types that can read this provider's mailboxes (IMAP/POP3). */
  inboundAuth: readonly AuthTypeName[];
  /** auth types that can send through its SMTP server. */
  smtpAuth: readonly AuthTypeName[];
  /** Delegated sign-in: the tenant (Microsoft) and the scopes asked for, refresh included. */
  delegated: { tenant?: string; scopes: readonly string[] };
  /** Why an auth type outside the lists above cannot work, and what to use. */
  authFix: string;
}

/** Delegated Exchange Online scopes: IMAP, POP and SMTP as the signed-in user, and a refresh token. */
export const MICROSOFT_DELEGATED_SCOPES = [
  "https://outlook.office.com/IMAP.AccessAsUser.All",
  "https://outlook.office.com/POP.AccessAsUser.All",
  "https://outlook.office.com/SMTP.Send",
  "offline_access",
] as const;

/** Microsoft Graph's endpoint per national cloud (its `/.default` scope is the app-only scope). */
export const GRAPH_ENDPOINTS = {
  global: "https://graph.microsoft.com",
  usgov: "https://graph.microsoft.us",
  china: "https://microsoftgraph.chinacloudapi.cn",
} as const;

/** Delegated Graph scopes: read and change the signed-in user's mail, send as them, and a refresh token. */
export const GRAPH_DELEGATED_SCOPES = ["https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send", "offline_access"] as const;

/** Google's one scope for IMAP, POP and SMTP (a refresh token comes with offline access, asked for by the flow). */
export const GOOGLE_MAIL_SCOPES = ["https://mail.google.com/"] as const;

const exchange = { imap: { host: "outlook.office365.com", port: 993, tls: "implicit" }, pop3: { host: "outlook.office365.com", port: 995, tls: "implicit" } } as const;
const google = {
  imap: { host: "imap.gmail.com", port: 993, tls: "implicit" },
  pop3: { host: "pop.gmail.com", port: 995, tls: "implicit" },
  // 587 with STARTTLS rather than 465: Google serves both, and STARTTLS is the schema's default for
  // smtp.tls, so an operator who only changes the port never ends up with a mismatched pair.
  smtp: { host: "smtp.gmail.com", port: 587, tls: "starttls" },
} as const;

export const PROVIDER_PRESETS: Record<ProviderName, ProviderPreset> = {
  "outlook-com": {
    label: "Outlook.com / Hotmail / Live",
    ...exchange,
    smtp: { host: "smtp-mail.outlook.com", port: 587, tls: "starttls" },
    // Basic authentication (passwords and app passwords) ended for consumer accounts on
    // 16 September 2024, and consumer accounts have no app-only flow.
    inboundAuth: ["microsoft-delegated"],
    smtpAuth: ["microsoft-delegated"],
    delegated: { tenant: "consumers", scopes: MICROSOFT_DELEGATED_SCOPES },
    authFix: "Outlook.com accepts only delegated OAuth since 16 September 2024: use auth: { type: microsoft-delegated, clientId: <your app's client id> } and run postroom auth sign-in",
  },
  office365: {
    label: "Microsoft 365 (Exchange Online)",
    ...exchange,
    smtp: { host: "smtp.office365.com", port: 587, tls: "starttls" },
    // Exchange Online turned basic authentication off for IMAP and POP in 2022; password SMTP AUTH
    // still works until the end of December 2026 (config check warns).
    inboundAuth: ["microsoft365", "microsoft-delegated"],
    smtpAuth: ["microsoft365", "microsoft-delegated", "password"],
    delegated: { tenant: "organizations", scopes: MICROSOFT_DELEGATED_SCOPES },
    authFix: "Exchange Online reads mail only with OAuth: use auth: { type: microsoft365, tenantId, clientId, clientSecret } (app-only) or { type: microsoft-delegated, clientId } (a person signs in)",
  },
  gmail: {
    label: "Gmail (personal)",
    ...google,
    inboundAuth: ["password", "google-delegated"],
    smtpAuth: ["password", "google-delegated"],
    delegated: { scopes: GOOGLE_MAIL_SCOPES },
    authFix: "personal Gmail takes an app password (auth: { type: password }) or delegated OAuth (auth: { type: google-delegated, clientId, clientSecret })",
  },
  "google-workspace": {
    label: "Google Workspace",
    ...google,
    // Plain passwords ("less secure apps") are gone; an app password works only where the admin allows them.
    inboundAuth: ["google-service-account", "google-delegated", "password"],
    smtpAuth: ["google-service-account", "google-delegated", "password"],
    delegated: { scopes: GOOGLE_MAIL_SCOPES },
    authFix: "Google Workspace takes a service account with domain-wide delegation (auth: { type: google-service-account, keyFile }), delegated OAuth, or an app password where the admin allows them",
  },
};

/** True for one of {@link PROVIDER_NAMES}. */
export function isProviderName(value: unknown): value is ProviderName {
  return typeof value === "string" && (PROVIDER_NAMES as readonly string[]).includes(value);
}

/** The preset endpoint's port, when the operator's TLS mode is the preset's (otherwise the protocol's default applies). */
export function presetPort(endpoint: Endpoint, tls: string | undefined): number | undefined {
  return tls === undefined || tls === endpoint.tls ? endpoint.port : undefined;
}

/**
 * The end of password SMTP AUTH on Exchange Online, and the one fix every part of Postroom names
 * for it: `config check`, the Softdial import, smtp-sender's 535 5.7.139 / 550 5.7.30 verdicts and
 * `test-auth`. Microsoft's Message Center update of January 2026: disabled by default for existing
 * tenants at the end of December 2026 (admins can turn it back on for a while), unavailable for
 * new tenants; afterwards the server answers `550 5.7.30`.
 */
export const EXCHANGE_BASIC_SMTP_END = {
  /** The last day password SMTP is on by default. */
  date: "2026-12-31",
  /** The date as people say it. */
  when: "the end of December 2026",
  fix:
    "switch this mailbox's SMTP to OAuth: smtp.auth: { type: microsoft365, tenantId, clientId, clientSecret } " +
    "(the app needs SMTP.SendAsApp with admin consent, and Add-MailboxPermission -Identity <mailbox> -User <servicePrincipalId> -AccessRights FullAccess), " +
    "or { type: microsoft-delegated, clientId } and postroom auth sign-in --config <file> --mailbox <id>",
} as const;

/** Exchange Online's client-submission hosts in the three clouds (where SMTP AUTH basic ends). */
const EXCHANGE_ONLINE_SMTP = /^(smtp\.office365\.(com|us)|outlook\.office365\.(com|us)|smtp\.partner\.outlook\.cn|partner\.outlook\.cn)$/i;
/** Outlook.com's consumer hosts (basic authentication already ended in September 2024). */
const OUTLOOK_COM = /^(smtp-mail\.outlook\.com|imap-mail\.outlook\.com|pop-mail\.outlook\.com)$/i;

/** True for an Exchange Online (Microsoft 365) IMAP, POP or SMTP host. */
export function isExchangeOnlineHost(host: string | undefined): boolean {
  return host !== undefined && EXCHANGE_ONLINE_SMTP.test(host.trim().replace(/\.$/, ""));
}

/** True for an Outlook.com consumer host. */
export function isOutlookComHost(host: string | undefined): boolean {
  return host !== undefined && OUTLOOK_COM.test(host.trim().replace(/\.$/, ""));
}

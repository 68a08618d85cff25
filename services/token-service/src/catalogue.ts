import { EXCHANGE_BASIC_SMTP_END } from "@postroom/config";

/**
 * What administrators hit, and what to tell them: the provider signals Postroom recognises, each
 * with what it means and the exact fix. Matched on codes (AADSTS numbers, reply codes), never on
 * wording, because the wording changes. Used by token-service (the fix text published with a
 * mailbox's auth state) and by `postroom test-auth` (the explanation of a failed step).
 */

/** One row of the catalogue. */
export interface CatalogueEntry {
  /** The signal as an administrator sees it: `AADSTS7000215`, `IMAP NO AUTHENTICATE failed.` */
  code: string;
  /** transient: retry with backoff; needs-admin: a person must change the setup. */
  kind: "transient" | "needs-admin";
  /** What it means, in one sentence. */
  meaning: string;
  /** What to do, with portal pages and PowerShell where they apply. */
  fix: string;
}

/** Values that make a fix ready to paste. Missing values stay as `<placeholders>`. */
export interface FixContext {
  /** The application (client) id — the token's `appid`. */
  appId?: string;
  /** The service principal's object id (Enterprise application page) — the token's `oid`. */
  objectId?: string;
  /** The mailbox address. */
  mailbox?: string;
  /** The directory (tenant) id. */
  tenantId?: string;
  /** The OAuth scope Postroom asked for. */
  scope?: string;
}

const ENTRA = "Entra admin center (entra.microsoft.com)";

/** AADSTS number → entry. Every row of the reference table, plus the transient ones. */
const AADSTS: Record<number, Omit<CatalogueEntry, "code">> = {
  700016: {
    kind: "needs-admin",
    meaning: "the application was not found in the tenant",
    fix: `the client id is wrong, or the request went to the wrong tenant: copy the Application (client) ID from ${ENTRA} → App registrations → your app → Overview, and check the tenant id beside it`,
  },
  7000215: {
    kind: "needs-admin",
    meaning: "invalid client secret",
    fix: `use the secret's Value, not its Secret ID: ${ENTRA} → App registrations → your app → Certificates & secrets → New client secret, and copy the Value column (shown only once)`,
  },
  7000222: {
    kind: "needs-admin",
    meaning: "the client secret has expired",
    fix: `create a new secret (${ENTRA} → App registrations → your app → Certificates & secrets → New client secret) and update the reference, or switch to a certificate`,
  },
  7000218: {
    kind: "needs-admin",
    meaning: "the request carried no client credential",
    fix: "configure clientSecret (env:NAME or file:/path) or certificate { certificate, privateKey } for this mailbox",
  },
  700027: {
    kind: "needs-admin",
    meaning: "the client assertion signature is invalid: the identity platform does not trust this certificate",
    fix: `upload this certificate (the .crt/.pem, public part only) to ${ENTRA} → App registrations → your app → Certificates & secrets → Certificates, and check that the private key belongs to it and the PEM is intact`,
  },
  7000112: {
    kind: "needs-admin",
    meaning: "the application is disabled",
    fix: `re-enable it: ${ENTRA} → Enterprise applications → your app → Properties → "Enabled for users to sign-in?" = Yes`,
  },
  90002: {
    kind: "needs-admin",
    meaning: "the tenant was not found",
    fix: `check the tenant id for typos (${ENTRA} → Overview → Tenant ID), and that cloud matches the tenant (global, usgov, china)`,
  },
  900023: {
    kind: "needs-admin",
    meaning: "the tenant identifier is malformed",
    fix: "the tenant must be the Directory (tenant) ID GUID or a verified domain such as contoso.onmicrosoft.com",
  },
  500011: {
    kind: "needs-admin",
    meaning: "the resource principal was not found: the scope names a resource that does not exist in this tenant or cloud",
    fix: "use https://outlook.office365.com/.default (global), https://outlook.office365.us/.default (usgov) or https://partner.outlook.cn/.default (china), matching cloud",
  },
  1002012: {
    kind: "needs-admin",
    meaning: "the scope is invalid",
    fix: "use https://outlook.office365.com/.default: client-credential tokens need the resource with the /.default suffix",
  },
  70011: {
    kind: "needs-admin",
    meaning: "the scope is invalid",
    fix: "use https://outlook.office365.com/.default: client-credential tokens need the resource with the /.default suffix",
  },
  65001: {
    kind: "needs-admin",
    meaning: "admin consent is missing",
    fix: `${ENTRA} → App registrations → your app → API permissions → "Grant admin consent for <organisation>"`,
  },
  9001023: {
    kind: "needs-admin",
    meaning: "the /common (or /consumers) endpoint was used; app-only tokens need the organisation's own tenant",
    fix: "set tenantId to the Directory (tenant) ID GUID, not common, organizations or consumers",
  },
  90038: {
    kind: "needs-admin",
    meaning: "the tenant lives in another national cloud",
    fix: "choose the right cloud for this tenant: global, usgov (GCC High) or china (21Vianet)",
  },
  // Transient codes the platform uses: retry with backoff.
  90033: { kind: "transient", meaning: "a transient error at the identity platform", fix: "none needed: Postroom retries with backoff" },
  50196: { kind: "transient", meaning: "the identity platform detected a request loop", fix: "none needed: Postroom retries with backoff" },
};

/** Protocol-level signals from Exchange Online (and the test servers that imitate them). */
const SERVER_SIGNALS: CatalogueEntry[] = [
  {
    code: "IMAP NO AUTHENTICATE failed.",
    kind: "needs-admin",
    meaning: "Exchange refused the logon although the token is valid",
    fix: [
      "1. In Exchange Online PowerShell, register the service principal with the object id of the Enterprise application (not the App registration):",
      "   New-ServicePrincipal -AppId <appId> -ObjectId <objectId>",
      "2. Give it this mailbox:",
      "   Add-MailboxPermission -Identity <mailbox> -User <objectId> -AccessRights FullAccess",
      `3. In ${ENTRA} → App registrations → your app → API permissions: Office 365 Exchange Online → IMAP.AccessAsApp, then "Grant admin consent".`,
      "4. The token's aud must be https://outlook.office365.com and its roles must include IMAP.AccessAsApp.",
    ].join("\n"),
  },
  {
    code: "IMAP BAD User is authenticated but not connected.",
    kind: "needs-admin",
    meaning: "the token is valid but the app has no right to this mailbox",
    fix: "Add-MailboxPermission -Identity <mailbox> -User <objectId> -AccessRights FullAccess\nand use the mailbox's primary SMTP address as the login name",
  },
  {
    code: "POP -ERR Authentication failure",
    kind: "needs-admin",
    meaning: "the POP3 server refused the token or the permission",
    fix: [
      "New-ServicePrincipal -AppId <appId> -ObjectId <objectId>",
      "Add-MailboxPermission -Identity <mailbox> -User <objectId> -AccessRights FullAccess",
      `and consent POP.AccessAsApp (${ENTRA} → App registrations → your app → API permissions → Grant admin consent)`,
    ].join("\n"),
  },
  {
    code: "SMTP 535 5.7.3",
    kind: "needs-admin",
    meaning: "the SMTP server refused the token, or SMTP.SendAsApp or the mailbox permission is missing",
    fix: [
      `consent SMTP.SendAsApp (${ENTRA} → App registrations → your app → API permissions → Grant admin consent), then`,
      "New-ServicePrincipal -AppId <appId> -ObjectId <objectId>",
      "Add-MailboxPermission -Identity <mailbox> -User <objectId> -AccessRights FullAccess",
    ].join("\n"),
  },
  {
    code: "SMTP 535 5.7.139",
    kind: "needs-admin",
    meaning: "SMTP AUTH is switched off for the tenant or the mailbox",
    fix: "Set-TransportConfig -SmtpClientAuthenticationDisabled $false\nor, for this mailbox only: Set-CASMailbox <mailbox> -SmtpClientAuthenticationDisabled $false",
  },
  {
    code: "SMTP 550 5.7.30",
    kind: "needs-admin",
    meaning: "password (basic) SMTP AUTH is retired for this tenant",
    fix: EXCHANGE_BASIC_SMTP_END.fix,
  },
  {
    code: "password refused",
    kind: "needs-admin",
    meaning: "the server refused the user name or password",
    fix: "check the password (or app password) the reference points to; Gmail and Outlook.com need an app password with 2-Step Verification, and an account password change revokes it",
  },
];

/** The catalogue entry for an AADSTS number, if known. */
export function aadstsEntry(code: number): CatalogueEntry | undefined {
  const entry = AADSTS[code];
  return entry === undefined ? undefined : { code: `AADSTS${code}`, ...entry };
}

/** Every catalogue entry (for documentation and tests). */
export function catalogue(): CatalogueEntry[] {
  return [...Object.keys(AADSTS).map((c) => aadstsEntry(Number(c))!), ...SERVER_SIGNALS];
}

/** Recognises a mail server's refusal by its reply code. */
export function serverSignal(protocol: "imap" | "pop3" | "smtp", text: string): CatalogueEntry | undefined {
  const t = text.trim();
  if (protocol === "smtp") {
    if (/\b5\.7\.139\b/.test(t)) return SERVER_SIGNALS.find((s) => s.code === "SMTP 535 5.7.139");
    if (/\b5\.7\.30\b/.test(t)) return SERVER_SIGNALS.find((s) => s.code === "SMTP 550 5.7.30");
    if (/^535\b|\b5\.7\.(3|8)\b/.test(t)) return SERVER_SIGNALS.find((s) => s.code === "SMTP 535 5.7.3");
    return undefined;
  }
  if (protocol === "pop3") return /^-ERR/.test(t) ? SERVER_SIGNALS.find((s) => s.code === "POP -ERR Authentication failure") : undefined;
  if (/not connected/i.test(t)) return SERVER_SIGNALS.find((s) => s.code === "IMAP BAD User is authenticated but not connected.");
  if (/AUTHENTICATIONFAILED|AUTHENTICATE failed|Authentication failed/i.test(t)) return SERVER_SIGNALS.find((s) => s.code === "IMAP NO AUTHENTICATE failed.");
  return undefined;
}

/** The entry for a refused password login. */
export function passwordRefused(): CatalogueEntry {
  return SERVER_SIGNALS.find((s) => s.code === "password refused")!;
}

/** Fills `<appId>`, `<objectId>`, `<mailbox>`, `<tenantId>` in a fix, so it can be pasted as is. */
export function fillFix(fix: string, context: FixContext): string {
  return fix
    .replaceAll("<appId>", context.appId ?? "<appId>")
    .replaceAll("<objectId>", context.objectId ?? "<objectId>")
    .replaceAll("<mailbox>", context.mailbox ?? "<mailbox>")
    .replaceAll("<tenantId>", context.tenantId ?? "<tenantId>");
}

import { mkdir, rename, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tempDir, type TempDir } from "@postroom/mail-servers";

/** Options for {@link dovecotOAuth2}. */
export interface DovecotOAuth2Options {
  /** The fake identity platform's introspection URL (`FakeIdentityInfo.introspectionUrl`). */
  introspectionUrl: string;
  /** CA certificate Dovecot trusts for that HTTPS endpoint (`FakeIdentityInfo.caCertPath`). */
  caCertPath: string;
  /**
   * SASL mechanisms for the OAuth logins. Default `["xoauth2"]` — what Exchange Online offers;
   * imapflow prefers OAUTHBEARER whenever it is offered, so only this profile exercises the
   * production path. Add "oauthbearer" to test that too.
   */
  mechanisms?: Array<"xoauth2" | "oauthbearer">;
  /** Keep PLAIN/LOGIN for the passwd-file users as well (default true: fixtures append mail with them). */
  keepPassword?: boolean;
  /** Mailbox → app (client) ids allowed to open it: Exchange's `Add-MailboxPermission`. */
  grants?: Record<string, string[]>;
}

/** What to pass to `startDovecot` for an OAuth-accepting Dovecot, and how to change grants. */
export interface DovecotOAuth2Profile {
  /** `DovecotOptions.authMechanisms`. */
  authMechanisms: string[];
  /** `DovecotOptions.extraConfig`: the oauth2 passdbs. */
  extraConfig: string;
  /** `Add-MailboxPermission`: lets app `clientId` open `mailbox` (visible to the next login). */
  grant(mailbox: string, clientId: string): Promise<void>;
  /** `Remove-MailboxPermission`. */
  revoke(mailbox: string, clientId: string): Promise<void>;
  /** Holds the settings and grant files; remove after Dovecot stops. */
  dir: TempDir;
}

/**
 * Dovecot 2.3's `oauth2` passdb validating bearer tokens against the fake identity platform, plus
 * a grant list standing in for Exchange's `Add-MailboxPermission`.
 *
 * Facts this relies on (Dovecot 2.3.19):
 * - `introspection_mode = post` panics in Dovecot's HTTP client and `%` variables in the URL make
 *   it fail the same way, so the mode is `get` with a constant URL. One passdb per protocol
 *   (`protocol imap { passdb {...} }`) with its own URL (`.../introspect/imap?token=`) tells the
 *   endpoint which protocol asks, so it can require IMAP.AccessAsApp, POP.AccessAsApp or
 *   SMTP.SendAsApp.
 * - An app-only token names no mailbox, yet the passdb insists that one field of the introspection
 *   answer equals the formatted login name: a constant `username_format` and a constant answer
 *   field neutralise that comparison.
 * - The mailbox grant is a second passdb, chained after the oauth2 one: a passwd-file per app
 *   (`grants/<appid>`, chosen with `%{passdb:postroom_appid}` exported by the first) that lists
 *   the mailboxes with `nopassword`. `result_failure = return-fail` makes a missing line fail the
 *   login; without it a missing permission would still log in.
 */
export async function dovecotOAuth2(options: DovecotOAuth2Options): Promise<DovecotOAuth2Profile> {
  const dir = tempDir("dovecot-oauth2");
  const grantsDir = join(dir.path, "grants");
  await mkdir(grantsDir, { recursive: true });
  const grants = new Map<string, Set<string>>();
  let mtime = 0;
  const writeGrants = async (clientId: string) => {
    const lines = [...grants].filter(([, apps]) => apps.has(clientId)).map(([mailbox]) => `${mailbox}:::::::nopassword\n`);
    const path = join(grantsDir, clientId);
    await writeFile(`${path}.tmp`, lines.join(""), { mode: 0o644 });
    // Dovecot notices a changed passwd-file by mtime (one-second resolution): see DovecotServer.
    mtime = Math.max(Math.floor(Date.now() / 1000), mtime + 1);
    await utimes(`${path}.tmp`, mtime, mtime);
    await rename(`${path}.tmp`, path);
  };
  const change = async (mailbox: string, clientId: string, add: boolean) => {
    const set = grants.get(mailbox.toLowerCase()) ?? new Set<string>();
    if (add) set.add(clientId);
    else set.delete(clientId);
    grants.set(mailbox.toLowerCase(), set);
    await writeGrants(clientId);
    const target = (Math.floor(Date.now() / 1000) + 1) * 1000 + 50;
    await new Promise((r) => setTimeout(r, Math.max(0, target - Date.now())));
  };
  const apps = new Set<string>();
  for (const [mailbox, clients] of Object.entries(options.grants ?? {})) {
    grants.set(mailbox.toLowerCase(), new Set(clients));
    for (const c of clients) apps.add(c);
  }
  for (const c of apps) await writeGrants(c);

  const mechanisms = options.mechanisms ?? ["xoauth2"];
  const blocks: string[] = [];
  for (const protocol of ["imap", "pop3", "smtp"]) {
    const path = join(dir.path, `oauth2-${protocol}.conf.ext`);
    await writeFile(
      path,
      `introspection_mode = get
introspection_url = ${options.introspectionUrl}/${protocol}?token=
force_introspection = yes
username_attribute = postroom_user
username_format = oauth
active_attribute = active
active_value = true
pass_attrs = postroom_appid=%{oauth2:appid}
tls_ca_cert_file = ${options.caCertPath}
`,
      { mode: 0o644 },
    );
    // "smtp" is the service name Dovecot's auth gives Postfix's SASL requests.
    blocks.push(`protocol ${protocol} {
  passdb {
    driver = oauth2
    mechanisms = ${mechanisms.join(" ")}
    args = ${path}
    result_success = continue-ok
    result_failure = return-fail
  }
  passdb {
    driver = passwd-file
    mechanisms = ${mechanisms.join(" ")}
    args = username_format=%Lu ${grantsDir}/%{passdb:postroom_appid}
    skip = unauthenticated
    result_success = return-ok
    result_failure = return-fail
  }
}`);
  }
  return {
    authMechanisms: [...(options.keepPassword === false ? [] : ["plain", "login"]), ...mechanisms],
    extraConfig: `${blocks.join("\n")}\n`,
    grant: (mailbox, clientId) => change(mailbox, clientId, true),
    revoke: (mailbox, clientId) => change(mailbox, clientId, false),
    dir,
  };
}

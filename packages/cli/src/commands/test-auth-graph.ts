// The Microsoft Graph steps of `postroom test-auth` (mailboxes with inbound.protocol: graph or
// outbound: graph) and the Graph part of the catalogue: what each refusal means and the
// PowerShell that fixes it, filled in with the app's ids and the mailbox. Kept beside the steps
// rather than in token-service's catalogue because only the tester explains Graph refusals in
// this detail (the services report the refusal and point here).
import { graphUserUrl, readGraphError } from "@postroom/runtime";
import { fillFix, type FixContext } from "@postroom/token-service";
import type { Explanation, StepResult } from "./test-auth-report.js";

/** What a Graph mailbox is tested for. */
export interface GraphCheckTarget {
  /** Graph's base URL without /v1.0 (the mailbox's graphEndpoint). */
  endpoint: string;
  /** The cloud's Graph resource (`https://graph.microsoft.com`): the token's expected audience. */
  resource: string;
  /** The user the URLs name (`graph.user`, else the address). */
  user: string;
  /** The folder read (inbound.protocol: graph), as Graph names it; absent when mail is not read through Graph. */
  folder?: string;
  /** Replies go out through Graph (outbound: graph). */
  sending: boolean;
}

/** The Graph permissions a mailbox needs: Mail.ReadWrite to read (and mark, move), Mail.Send to send. */
export function neededPermissions(t: Pick<GraphCheckTarget, "folder" | "sending">): string[] {
  return [...(t.folder !== undefined ? ["Mail.ReadWrite"] : []), ...(t.sending ? ["Mail.Send"] : [])];
}

const ENTRA = "Entra admin center (entra.microsoft.com)";
const TIMEOUT_MS = 15_000;

/**
 * The claims step of a Graph token: audience, and the permissions in `roles` (app-only) or `scp`
 * (delegated). Pure.
 */
export function graphClaimsStep(claims: Record<string, unknown>, t: GraphCheckTarget, details: string[]): StepResult {
  const delegated = claims.idtyp === "user" || typeof claims.scp === "string";
  const granted = delegated ? String(claims.scp ?? "").split(" ").filter(Boolean) : Array.isArray(claims.roles) ? (claims.roles as unknown[]).map(String) : [];
  const lines = [...details, ...(delegated ? [`scp:   ${granted.join(" ") || "(none)"}`] : [])];
  if (claims.aud !== t.resource && claims.aud !== `${t.resource}/`) {
    return {
      step: "claims",
      verdict: "fail",
      summary: `token audience is ${String(claims.aud)}, expected ${t.resource}`,
      details: lines,
      explanation: { code: "audience", meaning: "the token is for another API than Microsoft Graph, which refuses it (401 InvalidAuthenticationToken)", fix: `ask for scope ${t.resource}/.default (app-only) or Graph's delegated scopes; with --scope, give that scope` },
    };
  }
  const missing = neededPermissions(t).filter((p) => !granted.includes(p));
  if (missing.length > 0) {
    const kind = delegated ? "Delegated permissions" : "Application permissions";
    return {
      step: "claims",
      verdict: "fail",
      summary: `token ${delegated ? "scopes (scp)" : "roles"} lack ${missing.join(", ")}`,
      details: lines,
      explanation: {
        code: delegated ? "scp" : "roles",
        meaning: `without ${missing.join(" and ")} Microsoft Graph refuses to ${missing.map((p) => (p === "Mail.Send" ? "send" : "read the mailbox")).join(" and to ")} (403 ErrorAccessDenied)`,
        fix: `${ENTRA} → App registrations → your app → API permissions → Add a permission → Microsoft Graph → ${kind} → ${missing.join(", ")}, then "Grant admin consent"${delegated ? ", and sign in again (postroom auth sign-in)" : ""}`,
      },
    };
  }
  return { step: "claims", verdict: "pass", summary: `token decoded (not verified): audience and ${delegated ? "scopes" : "roles"} as Microsoft Graph needs them`, details: lines };
}

/**
 * What a Graph refusal means and how to fix it, matched on the status and Graph's error code.
 * `context` fills `<appId>`, `<objectId>` and `<mailbox>`; `needs` names the role assignments.
 */
export function graphRefusal(status: number, code: string, message: string, appOnly: boolean, context: FixContext, needs: string[]): Explanation {
  const said = `${status} ${code}${message ? ` (server: ${message.trim().slice(0, 160)})` : ""}`;
  if (code === "ErrorAccessDenied" || status === 403) {
    if (!appOnly) {
      return {
        code: said,
        meaning: "the signed-in account may not open this mailbox, or its token lacks the delegated permission",
        fix: fillFix("give the signed-in account access: Add-MailboxPermission -Identity <mailbox> -User <signed-in user> -AccessRights FullAccess (and Add-RecipientPermission <mailbox> -Trustee <signed-in user> -AccessRights SendAs to send as it), then sign in again", context),
      };
    }
    const roles = (needs.length > 0 ? needs : ["Mail.ReadWrite", "Mail.Send"]).map((p) => `   New-ManagementRoleAssignment -App <appId> -Role "Application ${p}" -CustomResourceScope "<scope name>"`);
    return {
      code: said,
      meaning: "the token is valid, but this mailbox is outside the app's RBAC for Applications scope (or an application access policy denies the app this mailbox)",
      fix: fillFix(
        [
          "In Exchange Online PowerShell:",
          "1. Register the app's service principal (the object id is the token's oid: the Enterprise application's, not the App registration's):",
          "   New-ServicePrincipal -AppId <appId> -ObjectId <objectId>",
          "2. A management scope that holds this mailbox (or use an existing one):",
          `   New-ManagementScope -Name "<scope name>" -RecipientRestrictionFilter "PrimarySmtpAddress -eq '<mailbox>'"`,
          "3. The app's roles within that scope:",
          ...roles,
          "4. Check it: Test-ServicePrincipalAuthorization -Identity <appId> -Resource <mailbox>",
          "With an application access policy instead, check that it grants this mailbox: Test-ApplicationAccessPolicy -Identity <mailbox> -AppId <appId>",
          "Exchange takes a while to apply permission changes: run test-auth again later if it still fails right after.",
        ].join("\n"),
        context,
      ),
    };
  }
  if (code === "MailboxNotEnabledForRESTAPI") {
    return {
      code: said,
      meaning: "Exchange Online has no mailbox here that Graph can open: it is on-premises (hybrid), a consumer (Outlook.com) account, unlicensed, inactive or soft-deleted, or not provisioned yet",
      fix: fillFix(
        [
          "Check the mailbox in Exchange Online PowerShell: Get-Mailbox <mailbox> | Format-List RecipientTypeDetails,IsInactiveMailbox,WhenSoftDeleted",
          "- not found, or a MailUser / RemoteUserMailbox: it lives on-premises; move it to Exchange Online, or read it over IMAP instead of Graph",
          "- a user mailbox needs an Exchange Online licence (Microsoft 365 admin center → Users → Active users → Licenses and apps); shared mailboxes need none",
          "- a mailbox created minutes ago may not be provisioned yet: try again later",
          "- Outlook.com and other consumer accounts cannot be opened with an organisation's app: use IMAP with a delegated sign-in",
          "- graph.user (or the address) must be the mailbox's user principal name, primary SMTP address or object id",
        ].join("\n"),
        context,
      ),
    };
  }
  if (code === "InvalidAuthenticationToken" || status === 401) {
    return {
      code: said,
      meaning: "Microsoft Graph did not accept the token: it is for another audience, has expired, or comes from another cloud or tenant",
      fix: "the token's aud must be Microsoft Graph (https://graph.microsoft.com; https://graph.microsoft.us or https://microsoftgraph.chinacloudapi.cn in the national clouds): ask for scope <graph>/.default, check this machine's clock (the clock step), and that graph.url belongs to the same cloud as the tenant",
    };
  }
  if (code === "ErrorInvalidUser" || code === "ResourceNotFound" || code === "Request_ResourceNotFound" || status === 404) {
    return {
      code: said,
      meaning: "Graph knows no such user (or folder) in this tenant",
      fix: fillFix("check the address, graph.user (the user principal name or object id) and inbound.folder (a well-known name such as inbox, or a folder id); the mailbox must belong to tenant <tenantId>", context),
    };
  }
  if (status === 429 || status === 503 || status === 504) {
    return { code: said, meaning: "Microsoft Graph is throttling or busy", fix: "none needed for Postroom (it waits as long as Retry-After says); run test-auth again in a minute" };
  }
  return { code: said, meaning: "Microsoft Graph refused the request", fix: "see the server's message; run with --json for the full report" };
}

/**
 * The mailbox step: reads the folder (GET /users/{user}/mailFolders/{folder}), which proves the
 * token, the permission and the mailbox grant together; with `sendTo`, sends one test message.
 * Sending is not tried otherwise: Graph has no way to check Mail.Send on a mailbox without
 * sending (and the claims step showed the permission is consented).
 */
export async function graphMailboxSteps(t: GraphCheckTarget, token: string, appOnly: boolean, context: FixContext, sendTo?: string): Promise<StepResult[]> {
  const steps: StepResult[] = [];
  const user = graphUserUrl(t.endpoint, t.user);
  const needs = neededPermissions(t);
  const call = async (method: string, url: string, body?: unknown): Promise<Response | Error> => {
    try {
      return await fetch(url, {
        method,
        headers: { authorization: `Bearer ${token}`, accept: "application/json", ...(body === undefined ? {} : { "content-type": "application/json" }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (error) {
      const e = error as Error & { cause?: { message?: string; code?: string } };
      return new Error(e.name === "TimeoutError" ? `no answer within ${TIMEOUT_MS / 1000} s` : (e.cause?.message ?? e.message));
    }
  };
  const unreachable = (error: Error): StepResult => ({
    step: "graph",
    verdict: "fail",
    summary: `Microsoft Graph unreachable: ${error.message}`,
    explanation: { code: "connection", meaning: "the request to Microsoft Graph got no answer", fix: `check the network path to ${new URL(t.endpoint).host}:443 (proxies, firewalls) and, for graph.url, that it is right; a certificate error needs the CA in NODE_EXTRA_CA_CERTS` },
  });
  if (t.folder !== undefined) {
    const res = await call("GET", `${user}/mailFolders/${encodeURIComponent(t.folder)}`);
    if (res instanceof Error) {
      steps.push(unreachable(res));
      return steps;
    }
    if (!res.ok) {
      const r = await readGraphError(res);
      steps.push({ step: "graph", verdict: "fail", summary: `Microsoft Graph refused to open ${t.folder} of ${t.user}`, explanation: graphRefusal(res.status, r.code, r.message, appOnly, context, needs) });
      return steps;
    }
    const folder = (await res.json()) as { displayName?: string; totalItemCount?: number; unreadItemCount?: number };
    steps.push({ step: "graph", verdict: "pass", summary: `opened ${folder.displayName ?? t.folder} of ${t.user} through Microsoft Graph (${folder.totalItemCount ?? "?"} messages, ${folder.unreadItemCount ?? "?"} unread)` });
  }
  if (t.sending && sendTo === undefined) {
    steps.push({ step: "send", verdict: "warn", summary: "sending through Graph not tried (give --send-to ADDRESS to send one test message)", explanation: { code: "not-tried", meaning: "Graph can check Mail.Send on a mailbox only by sending", fix: "run again with --send-to <your address>" } });
  }
  if (t.sending && sendTo !== undefined) {
    const message = {
      subject: "Postroom test-auth",
      body: { contentType: "Text", content: `This message was sent by postroom test-auth from ${t.user} through Microsoft Graph at ${new Date().toISOString()}.` },
      toRecipients: [{ emailAddress: { address: sendTo } }],
    };
    const res = await call("POST", `${user}/sendMail`, { message, saveToSentItems: false });
    if (res instanceof Error) steps.push({ ...unreachable(res), step: "send" });
    else if (res.status === 202) steps.push({ step: "send", verdict: "pass", summary: `test message to ${sendTo} accepted by Microsoft Graph (202)` });
    else {
      const r = await readGraphError(res);
      steps.push({ step: "send", verdict: "fail", summary: `Microsoft Graph refused the test message from ${t.user}`, explanation: graphRefusal(res.status, r.code, r.message, appOnly, context, ["Mail.Send"]) });
    }
  }
  return steps;
}

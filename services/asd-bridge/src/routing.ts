import { classificationAction, ClassificationSettings, type Mailbox } from "@postroom/config";
import type { Classification, MailArchived } from "@postroom/contracts";

export interface RouteDecision {
  offer: boolean;
  queue: string;
  /** Which rule decided ("default" when none matched). */
  rule: string;
  /** Shown to the agent with the session when the email is offered flagged (its classification and why). */
  flag?: string;
}

type Match = { exact: string } | { domain: string } | { wildcard: string } | { regex: string };

function matches(m: Match, values: string[]): boolean {
  return values.some((raw) => {
    const v = raw.toLowerCase();
    if ("exact" in m) return v === m.exact.toLowerCase();
    if ("domain" in m) return v.endsWith(`@${m.domain.toLowerCase()}`);
    if ("wildcard" in m) return new RegExp(`^${m.wildcard.toLowerCase().split("*").map(escape).join(".*")}$`).test(v);
    return new RegExp(m.regex, "i").test(raw);
  });
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

const LABELS: Record<Classification, string> = {
  human: "Human",
  "auto-reply": "Automatic reply",
  bounce: "Bounce (delivery failure report)",
  bulk: "Mailing list or bulk mail",
  loop: "Mail loop",
};

/**
 * Chooses the queue for an archived email, and whether it is offered at all.
 *
 * The archiver's verdict decides first, through the tenant's `classification` actions (offer,
 * flag = offer marked with the verdict, archive = never offered); the mailbox's legacy
 * `offerAutomatic: true` turns "archive" into "flag" for auto-replies, bounces and loops. The
 * event's own `offer` (false for history imports and what the loop breaker held back) always
 * wins. Then the first rule whose every condition matches chooses the queue: a rule with `kind`
 * matches that verdict only and its `offer` decides — the way to offer (or hold back) one kind
 * deliberately; a rule without `kind` routes only mail the verdict lets through, so a rule for a
 * customer's domain no longer offers that domain's auto-replies.
 */
export function route(
  mailbox: Mailbox,
  mail: Pick<MailArchived, "from" | "to" | "cc" | "subject" | "flags" | "offer"> & Partial<Pick<MailArchived, "classification" | "classificationReason">>,
  settings: ClassificationSettings = ClassificationSettings.parse({}),
): RouteDecision {
  const { routing } = mailbox;
  const kind: Classification = mail.classification ?? (mail.flags.bounce ? "bounce" : mail.flags.loop ? "loop" : mail.flags.autoReply ? "auto-reply" : "human");
  let action = classificationAction(settings, kind);
  if (action === "archive" && routing.offerAutomatic && kind !== "human" && kind !== "bulk") action = "flag";
  const flag = kind === "human" ? undefined : `${LABELS[kind]}${mail.classificationReason ? `: ${mail.classificationReason}` : ""}`;
  const flagged = (offer: boolean) => (offer && flag !== undefined && action !== "offer" ? { flag } : {});
  for (const [i, rule] of routing.rules.entries()) {
    if (rule.kind && rule.kind !== kind) continue;
    if (!rule.kind && action === "archive") continue;
    if (rule.from && !matches(rule.from, [mail.from])) continue;
    if (rule.to && !matches(rule.to, mail.to)) continue;
    if (rule.cc && !matches(rule.cc, mail.cc)) continue;
    if (rule.subject && !matches(rule.subject, [mail.subject])) continue;
    const offer = mail.offer && rule.offer;
    return { offer, queue: rule.queue ?? routing.defaultQueue, rule: rule.name ?? `rules[${i}]`, ...flagged(offer) };
  }
  const offer = mail.offer && action !== "archive";
  return {
    offer,
    queue: routing.defaultQueue,
    rule: action === "archive" ? `classification (${kind}): archive only` : mail.offer ? "default" : "not offered by the archiver",
    ...flagged(offer),
  };
}

/** A routing or queue setting that cannot work, with where it is in the config file. */
export interface RoutingProblem {
  path: string;
  problem: string;
}

/** Refused at start: the bridge will not run with a rule set it cannot apply. */
export class RoutingConfigError extends Error {
  override name = "RoutingConfigError";
  constructor(readonly problems: RoutingProblem[]) {
    super(`the routing configuration cannot be used:\n${problems.map((p) => `  ${p.path}: ${p.problem}`).join("\n")}`);
  }
}

/**
 * Checks every mailbox's rules before any mail is routed: a regular expression that does not
 * compile, a rule that matches nothing, a queue that no agent serves on a built-in tenant, an
 * overflow that points nowhere. The config schema has already checked the shape.
 */
export function validateRouting(config: { tenants: { id: string; acd: { type: string }; agents: { id: string; queues: string[] }[]; queues?: { id: string; timeoutSeconds?: number | undefined; overflow?: string | undefined }[]; unanswered?: { policy: string; fallbackQueue?: string | undefined }; mailboxes: Mailbox[] }[] }): RoutingProblem[] {
  const problems: RoutingProblem[] = [];
  for (const [ti, tenant] of config.tenants.entries()) {
    const served = new Set(tenant.agents.flatMap((a) => a.queues));
    const configured = new Set((tenant.queues ?? []).map((q) => q.id));
    for (const [qi, q] of (tenant.queues ?? []).entries()) {
      if (q.overflow !== undefined && q.overflow === q.id) problems.push({ path: `tenants[${ti}].queues[${qi}].overflow`, problem: "a queue cannot overflow into itself" });
      if (q.overflow !== undefined && q.timeoutSeconds === undefined) problems.push({ path: `tenants[${ti}].queues[${qi}].timeoutSeconds`, problem: "an overflow queue needs timeoutSeconds" });
    }
    const u = tenant.unanswered;
    if (u?.policy === "fallback" && tenant.agents.length === 0) {
      problems.push({ path: `tenants[${ti}].unanswered.policy`, problem: "fallback hands unanswered emails to the built-in distributor, but the tenant has no agents to take them: add agents, or use requeue" });
    } else if (u?.policy === "fallback" && u.fallbackQueue !== undefined && !served.has(u.fallbackQueue)) {
      problems.push({ path: `tenants[${ti}].unanswered.fallbackQueue`, problem: `queue "${u.fallbackQueue}" is served by no agent: unanswered emails would wait there forever` });
    }
    for (const [mi, mailbox] of tenant.mailboxes.entries()) {
      const base = `tenants[${ti}].mailboxes[${mi}].routing`;
      const queues = [{ path: `${base}.defaultQueue`, queue: mailbox.routing.defaultQueue }];
      for (const [ri, rule] of mailbox.routing.rules.entries()) {
        const at = `${base}.rules[${ri}]`;
        if (!rule.from && !rule.to && !rule.cc && !rule.subject && !rule.kind) problems.push({ path: at, problem: "the rule has no condition (from, to, cc, subject or kind), so it would catch every email; use defaultQueue instead" });
        for (const field of ["from", "to", "cc", "subject"] as const) {
          const m = rule[field];
          if (m && "regex" in m) {
            try {
              new RegExp(m.regex, "i");
            } catch (error) {
              problems.push({ path: `${at}.${field}.regex`, problem: `not a valid regular expression (${(error as Error).message})` });
            }
          }
          if (m && "domain" in m && (m.domain.includes("@") || m.domain.trim() === "")) problems.push({ path: `${at}.${field}.domain`, problem: "give the domain alone, e.g. example.com" });
        }
        if (rule.queue) queues.push({ path: `${at}.queue`, queue: rule.queue });
      }
      if (tenant.acd.type === "builtin" && tenant.agents.length > 0) {
        for (const q of queues) {
          if (!served.has(q.queue) && !configured.has(q.queue)) problems.push({ path: q.path, problem: `queue "${q.queue}" is served by no agent and not listed under queues: its sessions would wait forever` });
        }
      }
    }
  }
  return problems;
}

import type { Mailbox } from "@postroom/config";
import type { MailArchived } from "@postroom/contracts";

export interface RouteDecision {
  offer: boolean;
  queue: string;
  /** Which rule decided ("default" when none matched). */
  rule: string;
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

/**
 * Chooses the queue for an archived email: the first rule whose every condition matches wins;
 * automatic mail (auto-replies, bounces, loops) is not offered unless a rule or the mailbox says so.
 */
export function route(mailbox: Mailbox, mail: Pick<MailArchived, "from" | "to" | "cc" | "subject" | "flags" | "offer">): RouteDecision {
  const { routing } = mailbox;
  const kind = mail.flags.bounce ? "bounce" : mail.flags.loop ? "loop" : mail.flags.autoReply ? "auto-reply" : undefined;
  for (const [i, rule] of routing.rules.entries()) {
    if (rule.kind && rule.kind !== kind) continue;
    if (rule.from && !matches(rule.from, [mail.from])) continue;
    if (rule.to && !matches(rule.to, mail.to)) continue;
    if (rule.cc && !matches(rule.cc, mail.cc)) continue;
    if (rule.subject && !matches(rule.subject, [mail.subject])) continue;
    return { offer: mail.offer && rule.offer, queue: rule.queue ?? routing.defaultQueue, rule: rule.name ?? `rules[${i}]` };
  }
  const automatic = kind !== undefined && !routing.offerAutomatic;
  return { offer: mail.offer && !automatic, queue: routing.defaultQueue, rule: automatic ? `automatic mail (${kind})` : "default" };
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
export function validateRouting(config: { tenants: { id: string; acd: { type: string }; agents: { id: string; queues: string[] }[]; queues?: { id: string; timeoutSeconds?: number | undefined; overflow?: string | undefined }[]; mailboxes: Mailbox[] }[] }): RoutingProblem[] {
  const problems: RoutingProblem[] = [];
  for (const [ti, tenant] of config.tenants.entries()) {
    const served = new Set(tenant.agents.flatMap((a) => a.queues));
    const configured = new Set((tenant.queues ?? []).map((q) => q.id));
    for (const [qi, q] of (tenant.queues ?? []).entries()) {
      if (q.overflow !== undefined && q.overflow === q.id) problems.push({ path: `tenants[${ti}].queues[${qi}].overflow`, problem: "a queue cannot overflow into itself" });
      if (q.overflow !== undefined && q.timeoutSeconds === undefined) problems.push({ path: `tenants[${ti}].queues[${qi}].timeoutSeconds`, problem: "an overflow queue needs timeoutSeconds" });
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

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

import { X509Certificate } from "node:crypto";

/** A secret or certificate that expires soon or has expired. */
export interface ExpiryWarning {
  /** "client secret" or "certificate". */
  what: "client secret" | "certificate";
  expiresAt: Date;
  /** Whole days left (negative when past). */
  daysLeft: number;
  message: string;
  fix: string;
}

const DAY = 86_400_000;

/** Reads a certificate's notAfter; undefined when the PEM does not parse. */
export function certificateExpiry(certificatePem: string): Date | undefined {
  try {
    return new Date(new X509Certificate(certificatePem).validTo);
  } catch {
    return undefined;
  }
}

/**
 * Warnings for credentials that expire within `warnDays` (default 30) or already have: the client
 * secret by the date the config states (`clientSecretExpires`; Entra ID does not reveal it to the
 * app), the certificate by its own notAfter. Pure.
 */
export function expiryWarnings(
  input: { clientSecretExpires?: string | undefined; certificatePem?: string | undefined },
  now: Date,
  warnDays = 30,
): ExpiryWarning[] {
  const out: ExpiryWarning[] = [];
  const check = (what: ExpiryWarning["what"], expiresAt: Date, fix: string) => {
    const daysLeft = Math.floor((expiresAt.getTime() - now.getTime()) / DAY);
    if (expiresAt.getTime() - now.getTime() > warnDays * DAY) return;
    const message =
      expiresAt.getTime() <= now.getTime()
        ? `the ${what} expired on ${expiresAt.toISOString().slice(0, 10)}`
        : `the ${what} expires on ${expiresAt.toISOString().slice(0, 10)} (in ${daysLeft} day${daysLeft === 1 ? "" : "s"})`;
    out.push({ what, expiresAt, daysLeft, message, fix });
  };
  if (input.clientSecretExpires !== undefined) {
    // A date without time: the secret stops working at the start of that day (UTC), to be safe.
    check(
      "client secret",
      new Date(`${input.clientSecretExpires}T00:00:00Z`),
      "create a new client secret (Entra admin center → App registrations → your app → Certificates & secrets), update the reference and clientSecretExpires — or switch to a certificate",
    );
  }
  if (input.certificatePem !== undefined) {
    const expiresAt = certificateExpiry(input.certificatePem);
    if (expiresAt !== undefined) {
      check("certificate", expiresAt, "create a new certificate, upload it to the app registration (Certificates & secrets → Certificates) and update the certificate and privateKey references");
    }
  }
  return out;
}

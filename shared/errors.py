"""The error taxonomy: a stable code, whether a retry can help, and what the operator should do.

Operators (and, through them, customers' admins) are Japanese, so every hint exists in
English and Japanese. Codes are stable: they are stored in Table storage, shown by the status
API and searched for in dashboards, so a code is never renamed, only added.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class ErrorCode(StrEnum):
    """Stable identifiers of everything that can stop or flag an activation."""

    NOTICE_INVALID = "NOTICE_INVALID"
    NOTICE_CONFLICT = "NOTICE_CONFLICT"
    CONFIG_INVALID = "CONFIG_INVALID"
    CONSENT_MISSING = "CONSENT_MISSING"
    APP_NOT_IN_TENANT = "APP_NOT_IN_TENANT"
    CREDENTIAL_INVALID = "CREDENTIAL_INVALID"
    TENANT_NOT_FOUND = "TENANT_NOT_FOUND"
    ROLE_MISSING = "ROLE_MISSING"
    THROTTLED = "THROTTLED"
    EXCHANGE_UNAVAILABLE = "EXCHANGE_UNAVAILABLE"
    NETWORK_ERROR = "NETWORK_ERROR"
    EXCHANGE_REJECTED = "EXCHANGE_REJECTED"
    REPLICATION_TIMEOUT = "REPLICATION_TIMEOUT"
    CONFLICTING_CONNECTOR = "CONFLICTING_CONNECTOR"
    RECIPIENT_IN_TENANT = "RECIPIENT_IN_TENANT"
    SPF_MISSING = "SPF_MISSING"
    SPF_INCLUDE_MISSING = "SPF_INCLUDE_MISSING"
    SPF_TOO_MANY_LOOKUPS = "SPF_TOO_MANY_LOOKUPS"
    SPF_MULTIPLE_RECORDS = "SPF_MULTIPLE_RECORDS"
    SPF_LOOKUP_FAILED = "SPF_LOOKUP_FAILED"
    SPF_BROKEN_INCLUDE = "SPF_BROKEN_INCLUDE"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    ROUTING_NOT_ALLOWED = "ROUTING_NOT_ALLOWED"
    MAX_ATTEMPTS_EXCEEDED = "MAX_ATTEMPTS_EXCEEDED"
    UNHANDLED = "UNHANDLED"
    CONNECTOR_NOT_OURS = "CONNECTOR_NOT_OURS"
    JOURNAL_NDR_MISSING = "JOURNAL_NDR_MISSING"


@dataclass(frozen=True)
class Hint:
    """What an operator should do about an error, in both languages."""

    en: str
    ja: str


HINTS: dict[ErrorCode, Hint] = {
    ErrorCode.NOTICE_INVALID: Hint(
        "Correct the fields named in the errors and submit the notice again.",
        "エラーに示された項目を修正し、開通通知を再送信してください。",
    ),
    ErrorCode.NOTICE_CONFLICT: Hint(
        "A different notice was already received under this notice_id. Issue the new notice "
        "with its own notice_id, or confirm which content is correct.",
        "同じ notice_id で内容の異なる開通通知を受信済みです。新しい通知には別の notice_id を"
        "付けるか、正しい内容を確認してください。",
    ),
    ErrorCode.CONFIG_INVALID: Hint(
        "Fix the named application setting and restart the Function App.",
        "指定されたアプリケーション設定を修正し、Function App を再起動してください。",
    ),
    ErrorCode.CONSENT_MISSING: Hint(
        "The app's Exchange.ManageAsApp permission is not granted in the customer's tenant (not "
        "consented, or revoked). The customer's Global Administrator grants admin consent (open "
        "the admin-consent URL); a grant takes a few minutes to apply, then retry.",
        "お客様テナントでアプリの Exchange.ManageAsApp アクセス許可が付与されていません（未同意または"
        "取り消し済み）。お客様のグローバル管理者が管理者の同意を付与してください（管理者同意 URL を"
        "開いてください）。反映まで数分かかります。その後、再試行してください。",
    ),
    ErrorCode.APP_NOT_IN_TENANT: Hint(
        "The provisioning app is not in the customer's tenant (nobody granted admin consent, or "
        "its enterprise application was deleted). The customer's Global Administrator opens the "
        "admin-consent URL; wait a few minutes, then retry.",
        "プロビジョニング用アプリがお客様テナントに存在しません（管理者の同意が未実施か、エンタープライズ"
        "アプリケーションが削除されています）。お客様のグローバル管理者が管理者同意 URL を開いた後、"
        "数分待ってから再試行してください。",
    ),
    ErrorCode.CREDENTIAL_INVALID: Hint(
        "The app's certificate or secret is wrong or expired. Renew it in Key Vault / the app "
        "registration, then retry.",
        "アプリの証明書またはシークレットが誤っているか期限切れです。Key Vault またはアプリ登録で"
        "更新してから再試行してください。",
    ),
    ErrorCode.TENANT_NOT_FOUND: Hint(
        "The tenant_id does not exist. Check the tenant ID in the activation notice.",
        "tenant_id のテナントが存在しません。開通通知のテナント ID を確認してください。",
    ),
    ErrorCode.ROLE_MISSING: Hint(
        "Assign the Exchange Administrator role to the provisioning app's service principal in "
        "the customer tenant, wait a few minutes, then retry.",
        "お客様テナントでプロビジョニング用アプリのサービス プリンシパルに Exchange 管理者ロールを"
        "割り当て、数分待ってから再試行してください。",
    ),
    ErrorCode.THROTTLED: Hint(
        "Exchange Online is throttling this tenant; the activation is retried automatically.",
        "Exchange Online がこのテナントの要求を制限しています。自動的に再試行されます。",
    ),
    ErrorCode.EXCHANGE_UNAVAILABLE: Hint(
        "Exchange Online is temporarily unavailable; the activation is retried automatically.",
        "Exchange Online が一時的に利用できません。自動的に再試行されます。",
    ),
    ErrorCode.NETWORK_ERROR: Hint(
        "A network error reached Exchange Online or Entra ID; the activation is retried "
        "automatically.",
        "Exchange Online または Entra ID への通信でネットワーク エラーが発生しました。自動的に"
        "再試行されます。",
    ),
    ErrorCode.EXCHANGE_REJECTED: Hint(
        "Exchange Online rejected the command; read its message, fix the cause in the tenant, "
        "then retry.",
        "Exchange Online がコマンドを拒否しました。メッセージを確認し、テナント側の原因を解消して"
        "から再試行してください。",
    ),
    ErrorCode.REPLICATION_TIMEOUT: Hint(
        "A connector just created is not yet visible in Exchange Online; retry in a few minutes.",
        "作成したコネクタがまだ Exchange Online に反映されていません。数分後に再試行してください。",
    ),
    ErrorCode.CONFLICTING_CONNECTOR: Hint(
        "Another enabled outbound connector would take the same mail. Ask the customer to "
        "disable or narrow it (Exchange admin center > Mail flow > Connectors), then retry.",
        "同じメールを扱う別の有効な送信コネクタがあります。お客様に無効化または対象ドメインの"
        "絞り込みを依頼し（Exchange 管理センター > メール フロー > コネクタ）、再試行してください。",
    ),
    ErrorCode.RECIPIENT_IN_TENANT: Hint(
        "The validation recipient is in one of the tenant's own domains. Use an external "
        "mailbox that can send and receive mail, then resubmit.",
        "検証用の宛先がテナント自身のドメインです。送受信できる外部のメールアドレスを指定して"
        "再送信してください。",
    ),
    ErrorCode.SPF_MISSING: Hint(
        "The domain has no SPF record. Ask the customer to publish the SPF value from the "
        "vendor's SPF page.",
        "ドメインに SPF レコードがありません。ベンダーの SPF ページの値を公開するよう、お客様に"
        "依頼してください。",
    ),
    ErrorCode.SPF_INCLUDE_MISSING: Hint(
        "The SPF record does not include MailGates. Ask the customer to add the include from "
        "the vendor's SPF page.",
        "SPF レコードに MailGates の include がありません。ベンダーの SPF ページの include を追加"
        "するよう、お客様に依頼してください。",
    ),
    ErrorCode.SPF_TOO_MANY_LOOKUPS: Hint(
        "The SPF record needs more than 10 DNS look-ups (RFC 7208) and will fail at "
        "recipients. Ask the customer to flatten it.",
        "SPF レコードの DNS 参照が 10 回（RFC 7208 の上限）を超え、受信側で失敗します。"
        "レコードの整理をお客様に依頼してください。",
    ),
    ErrorCode.SPF_MULTIPLE_RECORDS: Hint(
        "The domain publishes more than one SPF record, which is a permanent error at "
        "recipients. Ask the customer to merge them into one.",
        "ドメインに SPF レコードが複数あり、受信側で恒久エラーになります。1 つにまとめるよう"
        "お客様に依頼してください。",
    ),
    ErrorCode.SPF_LOOKUP_FAILED: Hint(
        "The SPF record could not be looked up (DNS error); it is checked again on retry.",
        "DNS エラーのため SPF レコードを確認できませんでした。再試行時に再確認します。",
    ),
    ErrorCode.SPF_BROKEN_INCLUDE: Hint(
        "The SPF record includes MailGates, but an include: or redirect= evaluated before it "
        "names a domain without exactly one SPF record, so recipients return permerror for "
        "MailGates' mail. Ask the customer to fix or remove the include named in the message.",
        "SPF レコードに MailGates の include はありますが、その前に評価される include: または "
        "redirect= の参照先に SPF レコードがない（または複数ある）ため、受信側は MailGates の"
        "メールを permerror と判定します。メッセージに示された include を修正または削除するよう、"
        "お客様に依頼してください。",
    ),
    ErrorCode.VALIDATION_FAILED: Hint(
        "Exchange's connector validation failed. Check the failed tasks (smart host "
        "reachability, test mail to the recipient) and any other enabled outbound connector, "
        "then retry.",
        "Exchange のコネクタ検証に失敗しました。失敗したタスク（スマート ホストへの接続、宛先への"
        "テスト メール）と他の有効な送信コネクタを確認し、再試行してください。",
    ),
    ErrorCode.ROUTING_NOT_ALLOWED: Hint(
        "A connector change would route mail to a smart host or domain that is not on the "
        "allow-list (ALLOWED_SMART_HOSTS / ALLOWED_JOURNAL_DOMAINS); nothing was sent to "
        "Exchange. Check the notice and those settings.",
        "許可リスト（ALLOWED_SMART_HOSTS / ALLOWED_JOURNAL_DOMAINS）にないスマート ホストまたは"
        "ドメインへメールを転送する変更のため、Exchange には何も送信していません。開通通知と"
        "これらの設定を確認してください。",
    ),
    ErrorCode.MAX_ATTEMPTS_EXCEEDED: Hint(
        "Retries were exhausted; the last error is shown. Fix its cause, then retry from the "
        "status API or CLI.",
        "再試行の上限に達しました。最後のエラーの原因を解消し、ステータス API または CLI から"
        "再試行してください。",
    ),
    ErrorCode.UNHANDLED: Hint(
        "An unexpected error stopped the activation; the raw message is kept. Report it to the "
        "product team, then retry.",
        "予期しないエラーで処理が停止しました（元のメッセージは保存済み）。開発チームに報告し、"
        "再試行してください。",
    ),
    ErrorCode.CONNECTOR_NOT_OURS: Hint(
        "A connector (or journal rule) has the product's name but routes mail somewhere the "
        "product never would (a smart host or domain off the allow-list), so the termination "
        "removed nothing. Ask the customer who uses it; remove or rename it by hand if it is no "
        "longer needed, then retry.",
        "製品と同じ名前のコネクタ（またはジャーナル ルール）が、製品では設定しない宛先（許可リストにない"
        "スマート ホストまたはドメイン）へメールを転送しているため、解約処理では何も削除していません。その"
        "利用者をお客様に確認し、不要であれば手動で削除または名前を変更してから再試行してください。",
    ),
    ErrorCode.JOURNAL_NDR_MISSING: Hint(
        "Exchange Online needs an address for undeliverable journal reports before a journal rule "
        "works, and the tenant has none. Resubmit the notice with journal_ndr_address (a mailbox "
        "outside Exchange Online), or ask the customer to set one (Set-TransportConfig "
        "-JournalingReportNdrTo), then retry.",
        "Exchange Online ではジャーナル ルールを使う前に、配信できないジャーナル レポートの送信先"
        "アドレスが必要ですが、テナントに設定されていません。journal_ndr_address（Exchange Online "
        "外のメールボックス）を付けて開通通知を再送信するか、お客様に設定を依頼し（Set-TransportConfig "
        "-JournalingReportNdrTo）、再試行してください。",
    ),
}


class Disposition(StrEnum):
    """What an error does to an activation: the one decision every raise site leaves to POLICY."""

    RETRY = "retry"  # transient: back-off through the queue, up to MAX_ATTEMPTS, then failed
    # A grant (consent, role) takes minutes to reach Exchange after the customer acts: retry a
    # bounded number of times (GRANT_PROPAGATION_ATTEMPTS), each with a new token, then ask a person.
    RETRY_THEN_ATTENTION = "retry_then_attention"
    ATTENTION = "attention"  # a person must act (customer, operator): needs_attention at once
    FAIL = "fail"  # permanent: retrying cannot help, failed at once
    REJECT = "reject"  # the notice itself is refused: rejected, never run


# The error policy: every code's disposition, in one table (tests fail when a code has no row).
POLICY: Mapping[ErrorCode, Disposition] = MappingProxyType({
    ErrorCode.NOTICE_INVALID: Disposition.REJECT,
    ErrorCode.NOTICE_CONFLICT: Disposition.REJECT,
    ErrorCode.CONFIG_INVALID: Disposition.ATTENTION,  # a setting is fixed by an operator, never poison
    ErrorCode.CONSENT_MISSING: Disposition.RETRY_THEN_ATTENTION,
    ErrorCode.APP_NOT_IN_TENANT: Disposition.ATTENTION,  # the app is not in the tenant: no wait can fix it
    ErrorCode.CONNECTOR_NOT_OURS: Disposition.ATTENTION,  # a connector of our name routes elsewhere: a person decides
    ErrorCode.JOURNAL_NDR_MISSING: Disposition.ATTENTION,  # no address for undeliverable journal reports
    ErrorCode.CREDENTIAL_INVALID: Disposition.ATTENTION,
    ErrorCode.TENANT_NOT_FOUND: Disposition.FAIL,
    ErrorCode.ROLE_MISSING: Disposition.RETRY_THEN_ATTENTION,
    ErrorCode.THROTTLED: Disposition.RETRY,
    ErrorCode.EXCHANGE_UNAVAILABLE: Disposition.RETRY,
    ErrorCode.NETWORK_ERROR: Disposition.RETRY,
    ErrorCode.EXCHANGE_REJECTED: Disposition.FAIL,
    ErrorCode.REPLICATION_TIMEOUT: Disposition.RETRY,
    ErrorCode.CONFLICTING_CONNECTOR: Disposition.ATTENTION,
    ErrorCode.RECIPIENT_IN_TENANT: Disposition.ATTENTION,
    ErrorCode.SPF_MISSING: Disposition.ATTENTION,
    ErrorCode.SPF_INCLUDE_MISSING: Disposition.ATTENTION,
    ErrorCode.SPF_TOO_MANY_LOOKUPS: Disposition.ATTENTION,
    ErrorCode.SPF_MULTIPLE_RECORDS: Disposition.ATTENTION,
    ErrorCode.SPF_LOOKUP_FAILED: Disposition.RETRY,  # DNS errors are usually brief
    ErrorCode.SPF_BROKEN_INCLUDE: Disposition.ATTENTION,
    ErrorCode.VALIDATION_FAILED: Disposition.ATTENTION,
    ErrorCode.ROUTING_NOT_ALLOWED: Disposition.ATTENTION,
    ErrorCode.MAX_ATTEMPTS_EXCEEDED: Disposition.FAIL,
    ErrorCode.UNHANDLED: Disposition.ATTENTION,  # someone reads the kept message and reports it
})


def disposition(code: ErrorCode | str) -> Disposition:
    """POLICY's disposition for `code`; a code this build does not know asks a person."""
    try:
        return POLICY[ErrorCode(code)]
    except (KeyError, ValueError):
        return Disposition.ATTENTION


class ProvisioningError(Exception):
    """Anything that stops an activation, with what the operator needs to act on it.

    `detail` keeps the words of the system that failed (Exchange, Entra, DNS) unchanged, so
    support can search for them. What the error does to the activation is POLICY's decision
    for its code, never the raise site's: `retryable` and `needs_attention` are read from it.
    (The keyword arguments of the same names are still accepted from older raise sites and
    have no effect.)
    """

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        retry_after: float | None = None,
        status_code: int | None = None,
        extra_hint: str = "",
        retryable: bool | None = None,
        needs_attention: bool | None = None,
    ) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.status_code = status_code
        self.extra_hint = extra_hint

    @property
    def disposition(self) -> Disposition:
        return disposition(self.code)

    @property
    def retryable(self) -> bool:
        """Whether the product retries this on its own, with no one acting (POLICY: RETRY)."""
        return self.disposition is Disposition.RETRY

    @property
    def needs_attention(self) -> bool:
        """Whether a person is asked to act, at once or after the grant-propagation retries."""
        return self.disposition in (Disposition.ATTENTION, Disposition.RETRY_THEN_ATTENTION)

    @property
    def hint(self) -> Hint:
        base = HINTS[self.code]
        if not self.extra_hint:
            return base
        return Hint(f"{base.en} {self.extra_hint}", f"{base.ja} {self.extra_hint}")

    def to_dict(self) -> dict[str, object]:
        """The shape stored in Table storage and returned by the status API."""
        hint = self.hint
        return {
            "code": self.code.value,
            "message": self.detail,
            "retryable": self.retryable,
            "hint_en": hint.en,
            "hint_ja": hint.ja,
        }


class TransientError(ProvisioningError):
    """Retrying later may succeed (throttling, outages, network)."""

    # The codes raised with it (THROTTLED, EXCHANGE_UNAVAILABLE, NETWORK_ERROR, ...) are RETRY
    # in POLICY; the class only lets callers catch transient failures by type.


class AuthError(ProvisioningError):
    """Entra ID refused the app-only token (consent, credential, tenant)."""


class ExchangeError(ProvisioningError):
    """Exchange Online answered with an error."""

    # Exchange's exception type name (e.g. `...ManagementObjectNotFoundException`) when it
    # gave one: support searches for it, and it is what tells not-found from other 404s.
    exception_type: str | None = None


class ConnectorNotFoundError(ExchangeError):
    """The connector named by an Identity does not exist (or has not replicated yet)."""


class ConnectorExistsError(ExchangeError):
    """New-OutboundConnector was given a name already in use (case-insensitively)."""


class ExchangeTransientError(TransientError, ExchangeError):
    """Exchange throttled or was unavailable; it answered, so its own words are kept."""


class RoutingPolicyError(ProvisioningError, ValueError):
    """A connector change would route mail off the allow-list; it was refused before sending.

    A ProvisioningError so that the activation fails at once with a stored, explained reason
    (retrying cannot help); also a ValueError, the type `connectors.py` raises for the same
    rule, so callers that guard against bad values catch both.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorCode.ROUTING_NOT_ALLOWED, detail)


def error_dict(code: ErrorCode, detail: str) -> dict[str, Any]:
    """The stored error shape for a code without raising an exception (POLICY says if it retries)."""
    return ProvisioningError(code, detail).to_dict()


# A few words per code for places too small for a hint: the status page shows them beside
# the code in its list, and the CLI beside a warning. The hint (HINTS) stays the full advice.
LABELS_JA: dict[ErrorCode, str] = {
    ErrorCode.NOTICE_INVALID: "通知の内容が不正",
    ErrorCode.NOTICE_CONFLICT: "通知 ID の重複",
    ErrorCode.CONFIG_INVALID: "アプリ設定の誤り",
    ErrorCode.CONSENT_MISSING: "管理者の同意がない",
    ErrorCode.APP_NOT_IN_TENANT: "アプリがテナントにない",
    ErrorCode.CREDENTIAL_INVALID: "アプリの資格情報が無効",
    ErrorCode.TENANT_NOT_FOUND: "テナントが見つからない",
    ErrorCode.ROLE_MISSING: "Exchange 管理ロールがない",
    ErrorCode.THROTTLED: "Exchange の流量制限",
    ErrorCode.EXCHANGE_UNAVAILABLE: "Exchange が一時的に利用不可",
    ErrorCode.NETWORK_ERROR: "ネットワーク エラー",
    ErrorCode.EXCHANGE_REJECTED: "Exchange が要求を拒否",
    ErrorCode.REPLICATION_TIMEOUT: "Exchange への反映待ちで時間切れ",
    ErrorCode.CONFLICTING_CONNECTOR: "競合する既存コネクタ",
    ErrorCode.RECIPIENT_IN_TENANT: "検証用の宛先がテナント内",
    ErrorCode.SPF_MISSING: "SPF レコードがない",
    ErrorCode.SPF_INCLUDE_MISSING: "SPF に include がない",
    ErrorCode.SPF_TOO_MANY_LOOKUPS: "SPF の DNS 参照が多すぎる",
    ErrorCode.SPF_MULTIPLE_RECORDS: "SPF レコードが複数ある",
    ErrorCode.SPF_LOOKUP_FAILED: "SPF の DNS 照会に失敗",
    ErrorCode.SPF_BROKEN_INCLUDE: "SPF の include 先が壊れている",
    ErrorCode.VALIDATION_FAILED: "コネクタの検証に失敗",
    ErrorCode.ROUTING_NOT_ALLOWED: "許可されていない配送先",
    ErrorCode.MAX_ATTEMPTS_EXCEEDED: "再試行の上限に到達",
    ErrorCode.UNHANDLED: "想定外のエラー",
    ErrorCode.CONNECTOR_NOT_OURS: "同名だが当社のものではない",
    ErrorCode.JOURNAL_NDR_MISSING: "ジャーナル NDR 宛先が未設定",
}


def label_ja(code: object) -> str:
    """LABELS_JA's words for `code`, or "" for a code this build does not know (older or newer rows)."""
    try:
        return LABELS_JA[ErrorCode(str(code))]
    except (KeyError, ValueError):
        return ""

"""One valid JSON event of every type, as a producer would write it (CONTRACT §1-3)."""

T = "2026-11-20T10:00:00+08:00"

SAMPLES = {
    "bss.subscriber.events": [
        {"event_type": "SubscriberCreated", "event_id": "E-SC-1", "event_time": T, "source": "CRM-GD",
         "subscriber_id": "S1", "msisdn": "18912345678", "account_id": "A1", "home_province": "GD",
         "payment_type": "PREPAID", "plan_id": "P-PRE-1", "real_name": "张三", "id_number": "440101199001011234",
         "broadband_account": "gd_e8_0001", "broadband_type": "E8_1", "access_ne_id": "ONU-1"},
        {"event_type": "PlanChanged", "event_id": "E-PC-1", "event_time": T, "source": "CRM-GD",
         "subscriber_id": "S1", "plan_id": "P-PRE-2"},
        {"event_type": "StatusChanged", "event_id": "E-ST-1", "event_time": T, "source": "IBSS",
         "subscriber_id": "S1", "status": "SUSPENDED", "reason": "arrears"},
        {"event_type": "BalanceRecharged", "event_id": "E-BR-1", "event_time": 1795140000000, "source": "IBSS",
         "subscriber_id": "S1", "amount_li": 50000, "channel": "HOTLINE_10000"},
    ],
    "bss.order.events": [
        {"event_type": "OrderSubmitted", "event_id": "E-OS-1", "event_time": T, "source": "CRM-GD",
         "order_id": "O1", "subscriber_id": "S1", "channel": "APP",
         "items": [{"action": "ADD", "product_id": "VAS-CRBT", "product_type": "VAS"},
                   {"action": "REMOVE", "product_id": "CONTENT-IPTV", "product_type": "CONTENT"}]},
        {"event_type": "WorkOrderDispatched", "event_id": "E-WD-1", "event_time": T, "source": "IBSS",
         "order_id": "O1", "work_order_id": "W1", "target_system": "ISMP", "subscriber_id": "S1"},
        {"event_type": "WorkOrderCompleted", "event_id": "E-WC-1", "event_time": T, "source": "ISMP",
         "order_id": "O1", "work_order_id": "W1", "result": "FAILED", "error": "platform busy", "subscriber_id": "S1"},
    ],
    "bss.tariff.plans": [
        {"event_type": "TariffPlan", "event_id": "E-TP-1", "event_time": T, "source": "BILLING",
         "plan_id": "P-PRE-1", "version": 2, "effective_from": "2026-11-01T00:00:00+08:00",
         "payment_type": "PREPAID", "credit_limit_li": 0,
         "voice": {"domestic_li_per_min": 150, "international_li_per_min": 3000, "increment_s": 6,
                   "free_domestic_min": 100},
         "sms": {"domestic_li": 100, "international_li": 1000, "free_domestic_sms": 50},
         "data": {"li_per_mb": 300, "free_mb": 1024}},
    ],
    "net.cdr.raw": [
        {"event_type": "Cdr", "event_id": "E-CDR-1", "event_time": T, "source": "MEDIATION",
         "cdr_id": "C1", "subscriber_id": "S1", "service": "VOICE", "direction": "MO",
         "calling_number": "18912345678", "called_number": "008613800000000", "start_time": T,
         "duration_s": 61, "cell_id": "GD-CELL-1", "province": "GD"},
    ],
    "oss.topology": [
        {"event_type": "NetworkElement", "event_id": "E-NE-1", "event_time": T, "source": "NMS-HW",
         "ne_id": "ONU-1", "ne_type": "ONU", "parent_ne_id": "OLT-1", "site_id": "SITE-GZ-1",
         "services": ["BROADBAND", "IPTV"]},
    ],
    "oss.alarm.raw": [
        {"event_type": "Alarm", "event_id": "E-AL-1", "event_time": T, "source": "NMS-HW",
         "alarm_id": "AL1", "ne_id": "ONU-1", "site_id": "SITE-GZ-1", "probable_cause": "LOS",
         "severity": "MAJOR", "text": "loss of signal"},
    ],
    "sec.login.events": [
        {"event_type": "Login", "event_id": "E-LG-1", "event_time": T, "source": "EHOME",
         "login_id": "L1", "account": "gd_e8_0001", "account_type": "BROADBAND", "client": "EHOME_CLIENT",
         "result": "BAD_PASSWORD", "source_ip": "127.0.0.9", "province": "GD", "device_id": "dev-1"},
    ],
    "bss.cdr.rated": [
        {"event_type": "RatedCdr", "cdr_id": "C1", "subscriber_id": "S1", "service": "VOICE",
         "direction": "MO", "zone": "INTERNATIONAL", "billed_units": 66, "free_units": 0, "amount_li": 3300,
         "plan_id": "P-PRE-1", "plan_version": 2, "billing_period": "202611", "balance_after_li": 46700,
         "status": "RATED", "rated_at": T},
    ],
    "ocs.credit.control": [
        {"event_type": "CreditControl", "subscriber_id": "S1", "action": "SUSPEND", "balance_li": -10,
         "threshold_li": 0, "cause_event_id": "E-CDR-1"},
    ],
    "sec.fraud.alerts": [
        {"event_type": "FraudAlert", "alert_id": "FA1", "rule": "LOGIN_BRUTE_FORCE", "subject_type": "ACCOUNT",
         "subject": "gd_e8_0001", "severity": "HIGH", "window_start": T, "window_end": T,
         "evidence": {"failures": 5}, "first_event_id": "E-LG-1"},
    ],
    "oss.incidents": [
        {"event_type": "IncidentEvent", "incident_id": "INC-AL1", "change": "OPENED", "root_ne_id": "ONU-1",
         "root_alarm_id": "AL1", "severity": "MAJOR", "alarm_ids": ["AL1"], "affected_subscribers": 1,
         "affected_services": ["BROADBAND"], "flapping": False, "opened_at": T, "site_id": "SITE-GZ-1"},
    ],
    "bss.order.status": [
        {"event_type": "OrderStatus", "order_id": "O1", "subscriber_id": "S1", "status": "FAILED",
         "failed_work_orders": ["W1"]},
    ],
    "bss.subscription.state": [
        {"event_type": "SubscriptionState", "subscriber_id": "S1", "msisdn": "18912345678", "status": "ACTIVE",
         "plan_id": "P-PRE-1", "payment_type": "PREPAID", "broadband_account": "gd_e8_0001",
         "broadband_type": "E8_1", "products": ["VAS-CRBT"], "version": 3, "updated_at": T},
    ],
}

"""Unit tests of the per-client fault rules: how they parse, whose calls they pick, and how
their counts run out and start afresh. Run with `hack/stack/stack.sh check`."""

import unittest

import json
import xml.etree.ElementTree as ElementTree

from faults import FaultBook, Rule, app_id, error_answer, parse_rules


class ParseRules(unittest.TestCase):
    def test_each_kind_with_and_without_a_count(self):
        rules = parse_rules("CreateFleet=throttle*3, TerminateInstances=error500*2,GetQueueAttributes=slow2000*1,*=drop,"
                            "CreateFleet=lost*10")
        self.assertEqual(
            rules,
            [
                Rule("CreateFleet", "throttle", 0, 3),
                Rule("TerminateInstances", "error500", 0, 2),
                Rule("GetQueueAttributes", "slow", 2000, 1),
                Rule("*", "drop", 0, None),
                Rule("CreateFleet", "lost", 0, 10),
            ],
        )

    def test_empty_text_and_empty_entries_are_no_rules(self):
        self.assertEqual(parse_rules(""), [])
        self.assertEqual(parse_rules(" , CreateFleet=drop ,"), [Rule("CreateFleet", "drop")])

    def test_what_is_not_a_rule_is_named(self):
        for entry in ("CreateFleet", "CreateFleet=sleep", "CreateFleet=throttle*", "CreateFleet=slow",
                      "CreateFleet=throttle*x", "Create-Fleet=drop", "=drop", "CreateFleet=drop*1*2"):
            with self.assertRaises(ValueError, msg=entry) as raised:
                parse_rules(f"DescribeInstances=drop,{entry}")
            self.assertIn(repr(entry), str(raised.exception))


class AppId(unittest.TestCase):
    rust_sdk = "aws-sdk-rust/1.3.9 ua/2.1 api/ec2/1.274.0 os/linux lang/rust/1.95.0 app/fault-1f-3 m/E"

    def test_the_app_segment_of_the_first_header_that_has_one(self):
        self.assertEqual(app_id(self.rust_sdk, "other app/ignored"), "fault-1f-3")
        self.assertEqual(app_id(None, "Boto3/1.40 app/from-ua"), "from-ua")

    def test_no_app_segment_is_no_client(self):
        self.assertIsNone(app_id("aws-sdk-rust/1.3.9 os/linux", None, ""))
        self.assertIsNone(app_id("webapp/1.0"))


class FaultBookCounts(unittest.TestCase):
    def test_a_rule_fails_as_many_calls_as_its_count_then_the_next_rule_applies(self):
        book = FaultBook()
        rules = "CreateFleet=throttle*2,CreateFleet=error500*1,DescribeInstances=slow100"
        kinds = [getattr(book.fault_for("a", 1, rules, "CreateFleet"), "kind", None) for _ in range(4)]
        self.assertEqual(kinds, ["throttle", "throttle", "error500", None])
        for _ in range(3):
            self.assertEqual(book.fault_for("a", 1, rules, "DescribeInstances"), Rule("DescribeInstances", "slow", 100))
        self.assertIsNone(book.fault_for("a", 1, rules, "TerminateInstances"))
        self.assertEqual(
            book.injected("a"),
            "CreateFleet=error500*1,CreateFleet=throttle*2,DescribeInstances=slow100*3",
        )

    def test_a_star_rule_matches_every_operation_and_counts_each_by_name(self):
        book = FaultBook()
        for operation in ("CreateFleet", "GetParameter", "CreateFleet"):
            self.assertEqual(book.fault_for("a", 1, "*=drop*3", operation).kind, "drop")
        self.assertIsNone(book.fault_for("a", 1, "*=drop*3", "CreateFleet"))
        self.assertEqual(book.injected("a"), "CreateFleet=drop*2,GetParameter=drop*1")

    def test_clients_are_apart(self):
        book = FaultBook()
        self.assertIsNotNone(book.fault_for("a", 1, "CreateFleet=drop*1", "CreateFleet"))
        self.assertIsNotNone(book.fault_for("b", 1, "CreateFleet=drop*1", "CreateFleet"))
        self.assertEqual(book.injected("b"), "CreateFleet=drop*1")
        self.assertEqual(book.injected("c"), "")

    def test_a_new_version_of_the_rules_starts_the_counts_afresh_and_the_totals_go_on(self):
        book = FaultBook()
        self.assertIsNotNone(book.fault_for("a", 1, "CreateFleet=drop*1", "CreateFleet"))
        self.assertIsNone(book.fault_for("a", 1, "CreateFleet=drop*1", "CreateFleet"))
        self.assertIsNotNone(book.fault_for("a", 2, "CreateFleet=drop*1", "CreateFleet"))
        self.assertEqual(book.injected("a"), "CreateFleet=drop*2")

    def test_rules_that_do_not_parse_fail_every_call_until_rewritten(self):
        book = FaultBook()
        for _ in range(2):
            with self.assertRaises(ValueError):
                book.fault_for("a", 1, "CreateFleet=sometimes", "CreateFleet")
        self.assertIsNotNone(book.fault_for("a", 2, "CreateFleet=drop", "CreateFleet"))

    def test_each_injection_is_published_as_it_is_counted(self):
        book = FaultBook()
        published = []
        for _ in range(2):
            book.fault_for("a", 1, "CreateFleet=throttle", "CreateFleet", published.append)
        book.fault_for("a", 1, "CreateFleet=throttle", "RunInstances", published.append)
        self.assertEqual(published, ["CreateFleet=throttle*1", "CreateFleet=throttle*2"])


class ErrorAnswer(unittest.TestCase):
    def test_ec2_throttles_with_request_limit_exceeded_503_in_its_xml(self):
        status, headers, body = error_answer("ec2", "throttle", "r-1")
        self.assertEqual((status, headers["Content-Type"]), (503, "text/xml"))
        error = ElementTree.fromstring(body).find("Errors/Error")
        self.assertEqual(error.findtext("Code"), "RequestLimitExceeded")
        self.assertEqual(ElementTree.fromstring(body).findtext("RequestID"), "r-1")
        status, _, body = error_answer("ec2", "error500", "r-2")
        self.assertEqual((status, ElementTree.fromstring(body).findtext("Errors/Error/Code")), (500, "InternalError"))

    def test_sqs_answers_json_with_its_query_error_header(self):
        status, headers, body = error_answer("sqs", "throttle", "r-1")
        self.assertEqual((status, json.loads(body)["__type"]), (400, "RequestThrottled"))
        self.assertEqual(headers["x-amzn-query-error"], "RequestThrottled;Sender")
        self.assertEqual(headers["Content-Type"], "application/x-amz-json-1.0")
        status, headers, body = error_answer("sqs", "error500", "r-2")
        self.assertEqual((status, json.loads(body)["__type"]), (500, "InternalFailure"))
        self.assertEqual(headers["x-amzn-query-error"], "InternalFailure;Receiver")

    def test_query_services_throttle_with_throttling_and_json_ones_with_throttling_exception(self):
        status, _, body = error_answer("iam", "throttle", "r-1")
        error = ElementTree.fromstring(body).find("Error")
        self.assertEqual((status, error.findtext("Code"), error.findtext("Type")), (400, "Throttling", "Sender"))
        status, headers, body = error_answer("ssm", "throttle", "r-2")
        self.assertEqual((status, json.loads(body)["__type"]), (400, "ThrottlingException"))
        self.assertEqual(headers["Content-Type"], "application/x-amz-json-1.1")
        self.assertNotIn("x-amzn-query-error", headers)
        _, headers, _ = error_answer("eks", "error500", "r-3")
        self.assertEqual((headers["Content-Type"], headers["x-amzn-ErrorType"]), ("application/json", "InternalFailure"))


if __name__ == "__main__":
    unittest.main()

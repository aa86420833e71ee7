"""Unit tests of the EKS Auth stand-in's pure parts: who a token names, and which association
answers for it. Run with `hack/stack/stack.sh check` (the moto virtualenv has boto3)."""

import unittest

from eks_auth import find_association, service_account_of


def association(cluster, namespace, service_account, role):
    return {"clusterName": cluster, "namespace": namespace, "serviceAccount": service_account, "roleArn": role}


class ServiceAccountOf(unittest.TestCase):
    def test_a_service_account_username_names_its_namespace_and_name(self):
        self.assertEqual(service_account_of("system:serviceaccount:team-a:worker"), ("team-a", "worker"))

    def test_other_users_are_not_service_accounts(self):
        for username in ("admin", "system:node:ip-10-0-0-1", "system:serviceaccount:team-a", None, ""):
            self.assertIsNone(service_account_of(username), username)

    def test_extra_segments_are_refused(self):
        self.assertIsNone(service_account_of("system:serviceaccount:team-a:worker:extra"))


class FindAssociation(unittest.TestCase):
    associations = [
        association("one", "team-a", "worker", "arn:aws:iam::123456789012:role/a"),
        association("two", "team-a", "worker", "arn:aws:iam::123456789012:role/b"),
        association("one", "team-b", "worker", "arn:aws:iam::123456789012:role/c"),
    ]

    def test_cluster_namespace_and_service_account_all_count(self):
        found = find_association(self.associations, "two", "team-a", "worker")
        self.assertEqual(found["roleArn"], "arn:aws:iam::123456789012:role/b")
        found = find_association(self.associations, "one", "team-b", "worker")
        self.assertEqual(found["roleArn"], "arn:aws:iam::123456789012:role/c")

    def test_an_association_in_another_cluster_does_not_answer(self):
        self.assertIsNone(find_association(self.associations, "two", "team-b", "worker"))
        self.assertIsNone(find_association(self.associations, "one", "team-a", "other"))


if __name__ == "__main__":
    unittest.main()

"""Creates the AWS side of the local stack in moto: a VPC with one subnet per zone in three
zones and a security group, all tagged for discovery; AMIs behind the SSM parameters that
EC2NodeClass aliases resolve; the node IAM roles the examples and tests name; and the demo's
SQS queues. Idempotent: what exists is reused.
Prints what it made as JSON.

usage: aws_fixture.py CLUSTER_NAME   (AWS_ENDPOINT_URL and AWS_REGION point at moto)
"""

import json
import os
import sys

import boto3

KUBERNETES_MINOR = "1.36"
DISCOVERY_TAG = "windlass.dev/discovery"


def tagged(ec2, kind, cluster):
    filters = [{"Name": f"tag:{DISCOVERY_TAG}", "Values": [cluster]}]
    return getattr(ec2, f"describe_{kind}")(Filters=filters)


def ensure_vpc(ec2, cluster):
    vpcs = tagged(ec2, "vpcs", cluster)["Vpcs"]
    if vpcs:
        return vpcs[0]["VpcId"]
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": DISCOVERY_TAG, "Value": cluster}, {"Key": "Name", "Value": cluster}])
    return vpc


def ensure_subnets(ec2, cluster, vpc, region):
    existing = {s["AvailabilityZone"]: s["SubnetId"] for s in tagged(ec2, "subnets", cluster)["Subnets"]}
    subnets = []
    for index, suffix in enumerate("abc"):
        zone = region + suffix
        subnet = existing.get(zone)
        if subnet is None:
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{index * 16}.0/20", AvailabilityZone=zone)["Subnet"]["SubnetId"]
            ec2.create_tags(
                Resources=[subnet],
                Tags=[{"Key": DISCOVERY_TAG, "Value": cluster}, {"Key": "Name", "Value": f"{cluster}-{zone}"}],
            )
        subnets.append({"id": subnet, "zone": zone})
    return subnets


def ensure_security_group(ec2, cluster, vpc):
    groups = tagged(ec2, "security_groups", cluster)["SecurityGroups"]
    if groups:
        return groups[0]["GroupId"]
    group = ec2.create_security_group(GroupName=f"{cluster}-nodes", Description="Windlass nodes", VpcId=vpc)["GroupId"]
    ec2.create_tags(Resources=[group], Tags=[{"Key": DISCOVERY_TAG, "Value": cluster}])
    return group


def ensure_image(ec2, name, architecture):
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]
    if images:
        return images[0]["ImageId"]
    return ec2.register_image(
        Name=name,
        Architecture=architecture,
        RootDeviceName="/dev/xvda",
        VirtualizationType="hvm",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 20, "VolumeType": "gp3"}}],
    )["ImageId"]


def ensure_ami_parameters(ec2, ssm):
    """The public SSM parameters EKS publishes for its optimized AMIs, pointing at local images."""
    parameters = {}
    for arch, ec2_arch in (("x86_64", "x86_64"), ("arm64", "arm64")):
        al2023 = ensure_image(ec2, f"amazon-eks-node-al2023-{arch}-standard-{KUBERNETES_MINOR}", ec2_arch)
        parameters[f"/aws/service/eks/optimized-ami/{KUBERNETES_MINOR}/amazon-linux-2023/{arch}/standard/recommended/image_id"] = al2023
        bottlerocket = ensure_image(ec2, f"bottlerocket-aws-k8s-{KUBERNETES_MINOR}-{arch}", ec2_arch)
        parameters[f"/aws/service/bottlerocket/aws-k8s-{KUBERNETES_MINOR}/{arch}/latest/image_id"] = bottlerocket
        al2 = ensure_image(ec2, f"amazon-eks-node-{KUBERNETES_MINOR}-{arch}", ec2_arch)
        al2_path = "amazon-linux-2" if arch == "x86_64" else "amazon-linux-2-arm64"
        parameters[f"/aws/service/eks/optimized-ami/{KUBERNETES_MINOR}/{al2_path}/recommended/image_id"] = al2
    for name, value in parameters.items():
        ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
    return parameters


NODE_ROLES = ("WindlassNodeRole", "WindlassNodeRole-demo")
EC2_TRUST = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
})


def ensure_node_roles(iam):
    for role in NODE_ROLES:
        try:
            iam.get_role(RoleName=role)
        except iam.exceptions.NoSuchEntityException:
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=EC2_TRUST)
    return list(NODE_ROLES)


def ensure_queues(sqs, cluster):
    queues = {}
    for purpose in ("jobs", "orders", "interruption"):
        queues[purpose] = sqs.create_queue(QueueName=f"{cluster}-{purpose}")["QueueUrl"]
    return queues


def main():
    cluster = sys.argv[1]
    region = os.environ["AWS_REGION"]
    session = boto3.session.Session(region_name=region)
    ec2 = session.client("ec2")
    vpc = ensure_vpc(ec2, cluster)
    fixture = {
        "cluster": cluster,
        "region": region,
        "vpcId": vpc,
        "subnets": ensure_subnets(ec2, cluster, vpc, region),
        "securityGroupId": ensure_security_group(ec2, cluster, vpc),
        "amiParameters": ensure_ami_parameters(ec2, session.client("ssm")),
        "nodeRoles": ensure_node_roles(session.client("iam")),
        "queues": ensure_queues(session.client("sqs"), cluster),
    }
    json.dump(fixture, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()

"""moto server for the local stack.

AWS publishes the EKS-optimized and Bottlerocket AMI ids as public SSM parameters under
/aws/service/, and EC2NodeClass aliases (al2023@latest, ...) resolve through them. moto refuses
writes anywhere under /aws/service/, so the stack's fixture could not seed them; this server
lets writes through for exactly those two prefixes and is moto's own server otherwise.
"""

from moto.core.utils import utcnow
from moto.server import main
from moto.ssm import models

PUBLISHED_BY_AWS = ("/aws/service/eks/", "/aws/service/bottlerocket/")
_moto_put_parameter = models.SimpleSystemManagerBackend.put_parameter


def put_parameter(self, name, description, value, parameter_type, *args, **kwargs):
    if not name.startswith(PUBLISHED_BY_AWS):
        return _moto_put_parameter(self, name, description, value, parameter_type, *args, **kwargs)
    versions = self._parameters[name]
    parameter = models.Parameter(
        account_id=self.account_id,
        name=name,
        value=value,
        parameter_type=parameter_type or "String",
        description=description,
        allowed_pattern=None,
        keyid=None,
        last_modified_date=utcnow(),
        version=len(versions) + 1,
        data_type="text",
    )
    versions.append(parameter)
    return parameter


models.SimpleSystemManagerBackend.put_parameter = put_parameter

if __name__ == "__main__":
    main()

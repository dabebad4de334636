from __future__ import annotations

from fastapi import APIRouter

from api.deps import OrgDep, ReadSessionDep
from api.openapi import ModelRoute
from api.schemas import ActiveJobsUsage, OrganizationUsage, StorageUsageObject
from core import jobs, usage
from core.settings import get_settings

router = APIRouter(prefix="/v1/organization", tags=["organization"], route_class=ModelRoute)


@router.get("/usage")
def get_usage(session: ReadSessionDep, org: OrgDep) -> OrganizationUsage:
    """What the organization uses of its quotas: stored bytes by kind (what the storage
    quota counts) and active jobs."""
    return OrganizationUsage(
        organization_id=org,
        storage=StorageUsageObject.of(usage.storage_usage(session, org)),
        jobs=ActiveJobsUsage(active=jobs.count_active(session, org), limit=get_settings().max_active_jobs_per_org),
    )

"""fleet baseline

Revision ID: 0001
Revises: 
Create Date: 2026-11-29 16:58:12.347121

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('fleet_alarms',
    sa.Column('cabinet_id', sa.String(length=64), nullable=False),
    sa.Column('alarm_id', sa.BigInteger(), nullable=False),
    sa.Column('alarm', sa.String(length=100), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('cabinet_id', 'alarm_id')
    )
    op.create_table('fleet_cabinets',
    sa.Column('cabinet_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('in_service', sa.Boolean(), nullable=True),
    sa.Column('health_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('messages', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('cabinet_id')
    )
    op.create_table('fleet_dead_letters',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('instance', sa.String(length=80), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('fleet_down',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('body', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('fleet_instances',
    sa.Column('client_id', sa.String(length=80), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('subscribed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('client_id')
    )
    op.create_table('fleet_messages',
    sa.Column('id', sa.String(length=300), nullable=False),
    sa.Column('cabinet_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stored_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('instance', sa.String(length=80), nullable=False),
    sa.Column('body', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_fleet_messages_cabinet_seq', 'fleet_messages', ['cabinet_id', 'seq'], unique=False)
    op.create_table('fleet_receipts',
    sa.Column('cabinet_id', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.String(length=100), nullable=False),
    sa.Column('correction', sa.Integer(), nullable=False),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('cabinet_id', 'session_id')
    )
    op.create_index('ix_fleet_receipts_day', 'fleet_receipts', ['day', 'cabinet_id'], unique=False)
    op.create_table('fleet_reviews',
    sa.Column('cabinet_id', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.String(length=100), nullable=False),
    sa.Column('flagged', sa.Boolean(), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('flags', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('cabinet_id', 'session_id')
    )
    op.create_table('fleet_stock',
    sa.Column('cabinet_id', sa.String(length=64), nullable=False),
    sa.Column('slot', sa.String(length=64), nullable=False),
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('qty', sa.Integer(), nullable=False),
    sa.Column('par', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('cabinet_id', 'slot')
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('fleet_stock')
    op.drop_table('fleet_reviews')
    op.drop_index('ix_fleet_receipts_day', table_name='fleet_receipts')
    op.drop_table('fleet_receipts')
    op.drop_index('ix_fleet_messages_cabinet_seq', table_name='fleet_messages')
    op.drop_table('fleet_messages')
    op.drop_table('fleet_instances')
    op.drop_table('fleet_down')
    op.drop_table('fleet_dead_letters')
    op.drop_table('fleet_cabinets')
    op.drop_table('fleet_alarms')
